"""The Fyers broker adapter: typed requests and results over the real ``fyers_apiv3`` SDK.

- ``client``: :class:`FyersBroker` (profile, funds, quotes, place_order,
  order_by_id, orders_by_tag, positions, tradebook);
- ``auth``: the daily login (:func:`login_url`, :func:`exchange_auth_code`,
  :func:`refresh_access_token`, :func:`token_expiry`);
- ``models``: the typed values; ``outcome``: how answers become results or
  failure classes; ``transport``: deadlines and call records under the SDK.

Importing this package loads neither ``requests`` nor the SDK.
"""

from common.broker.auth import app_id_hash, exchange_auth_code, login_url, refresh_access_token, token_expiry
from common.broker.client import FyersBroker
from common.broker.models import (
    STATUS_NAMES,
    BrokerOrder,
    OrderRequest,
    PlaceResult,
    Position,
    Profile,
    Quote,
    TokenPair,
    Trade,
)

__all__ = [
    "STATUS_NAMES", "BrokerOrder", "FyersBroker", "OrderRequest", "PlaceResult", "Position", "Profile", "Quote",
    "TokenPair", "Trade", "app_id_hash", "exchange_auth_code", "login_url", "refresh_access_token", "token_expiry",
]
