#!/usr/bin/env bash
# Installs what the emulators need when it is missing: the Google Cloud CLI, the
# Firestore and Pub/Sub emulator components, and a Java runtime. Safe to re-run.
set -euo pipefail

packages=(google-cloud-cli google-cloud-cli-firestore-emulator google-cloud-cli-pubsub-emulator)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing: ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq || true
if ! $SUDO apt-get install -y -qq "${missing[@]}"; then
  # The CLI packages live in Google's own apt repository: add it, then try again.
  echo "Adding the Google Cloud apt repository" >&2
  $SUDO apt-get install -y -qq ca-certificates curl gnupg apt-transport-https
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \
    | $SUDO gpg --dearmor --yes -o /usr/share/keyrings/cloud.google.gpg
  echo "deb [signed-by=/usr/share/keyrings/cloud.google.gpg] https://packages.cloud.google.com/apt cloud-sdk main" \
    | $SUDO tee /etc/apt/sources.list.d/google-cloud-sdk.list >/dev/null
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}"
fi
