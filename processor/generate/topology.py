"""The demo shop's shape: services, what each handler calls, user operations, latency and error priors."""

from __future__ import annotations

from dataclasses import dataclass

RPC, DB, MESSAGING = "rpc", "db", "messaging"
ROOT_SERVICE = "frontend"


@dataclass(frozen=True)
class Profile:
    """Own-work latency (lognormal: median_ms * exp(sigma * N(0,1))) and base error probability."""

    median_ms: float
    sigma: float
    error_p: float


@dataclass(frozen=True)
class Downstream:
    """One outgoing call a handler makes, in order.

    `target` is the called service (rpc, messaging) or the database node name (db), i.e. the
    name the service graph must give the server side. `method` keys the target's handler
    (rpc, messaging); `name` is the client span's name. A failed `critical` call fails the
    caller's server span and skips the caller's remaining calls (checkout stops when payment
    fails); a non-critical one (ads, recommendations, email) is swallowed.
    """

    kind: str
    target: str
    method: str
    name: str
    attributes: tuple[tuple[str, str], ...] = ()
    critical: bool = True
    repeat: tuple[int, int] = (1, 1)  # inclusive range of how many times the call is made


SERVICES: dict[str, Profile] = {
    "frontend": Profile(2.0, 0.5, 0.002),
    "cart": Profile(1.0, 0.4, 0.003),
    "checkout": Profile(4.0, 0.5, 0.005),
    "payment": Profile(30.0, 0.35, 0.01),
    "product-catalog": Profile(1.5, 0.4, 0.002),
    "currency": Profile(2.0, 0.3, 0.002),
    "shipping": Profile(6.0, 0.4, 0.003),
    "email": Profile(12.0, 0.5, 0.005),
    "recommendation": Profile(5.0, 0.4, 0.004),
    "ad": Profile(3.0, 0.5, 0.008),
    "accounting": Profile(3.0, 0.5, 0.002),
}

# Database nodes, keyed by the name the service graph gives them: the first
# database_name_attributes value (db.name by default), whatever peer.service or
# server.address say. Their "own work" is the client span.
DATABASES: dict[str, Profile] = {
    "redis-cart": Profile(0.4, 0.5, 0.001),
    "postgres": Profile(1.0, 0.5, 0.002),
}

NETWORK = Profile(0.1, 0.5, 0.0)  # one-way delay between a client span and its server span
KAFKA_SEND = Profile(0.8, 0.4, 0.001)  # producer span duration; error_p = broker rejects
KAFKA_QUEUE = Profile(3.0, 0.6, 0.0)  # producer end -> consumer start
CLIENT_TIMEOUT_P = 0.001  # client span ERROR while the server span is fine (deadline hit)


def _rpc(target: str, grpc_service: str, method: str, peer: bool = False,
         critical: bool = True, repeat: tuple[int, int] = (1, 1)) -> Downstream:
    full = f"oteldemo.{grpc_service}/{method}"
    attrs: tuple[tuple[str, str], ...] = (("rpc.system", "grpc"), ("rpc.method", method))
    if peer:
        attrs += (("peer.service", target),)
    return Downstream(RPC, target, full, full, attrs, critical, repeat)


_REDIS = (("db.system", "redis"), ("db.name", "redis-cart"), ("server.address", "redis-cart"))
_POSTGRES = (("db.system", "postgresql"), ("db.name", "postgres"), ("peer.service", "pg-primary"))


def _redis(op: str) -> Downstream:
    return Downstream(DB, "redis-cart", "", op, _REDIS)


_SELECT_PRODUCTS = Downstream(DB, "postgres", "", "SELECT catalog.products", _POSTGRES)
_PUBLISH_ORDER = Downstream(
    MESSAGING, "accounting", "orders process", "orders publish",
    (("messaging.system", "kafka"), ("messaging.destination.name", "orders"),
     ("messaging.operation.type", "publish")),
    critical=False,
)
CONSUMER_ATTRIBUTES = (
    ("messaging.system", "kafka"), ("messaging.destination.name", "orders"),
    ("messaging.operation.type", "process"),
)

GET_PRODUCT = _rpc("product-catalog", "ProductCatalogService", "GetProduct")
LIST_PRODUCTS = _rpc("product-catalog", "ProductCatalogService", "ListProducts")
CONVERT = _rpc("currency", "CurrencyService", "Convert")
GET_CART = _rpc("cart", "CartService", "GetCart")
RECOMMEND = _rpc("recommendation", "RecommendationService", "ListRecommendations",
                 peer=True, critical=False)
GET_ADS = _rpc("ad", "AdService", "GetAds", peer=True, critical=False)

# (service, method) -> the calls its handler makes, sequentially.
HANDLERS: dict[tuple[str, str], tuple[Downstream, ...]] = {
    ("frontend", "GET /api/products/{productId}"): (GET_PRODUCT, CONVERT, RECOMMEND, GET_ADS),
    ("frontend", "GET /"): (LIST_PRODUCTS, _rpc("currency", "CurrencyService", "Convert",
                                                repeat=(2, 4)), GET_ADS),
    ("frontend", "GET /api/cart"): (GET_CART, RECOMMEND),
    ("frontend", "POST /api/cart"): (GET_PRODUCT, _rpc("cart", "CartService", "AddItem")),
    ("frontend", "POST /api/checkout"): (_rpc("checkout", "CheckoutService", "PlaceOrder"),),
    ("frontend", "GET /api/recommendations"): (RECOMMEND,),
    ("checkout", "oteldemo.CheckoutService/PlaceOrder"): (
        GET_CART,
        _rpc("product-catalog", "ProductCatalogService", "GetProduct", repeat=(1, 3)),
        _rpc("currency", "CurrencyService", "Convert", repeat=(1, 3)),
        _rpc("shipping", "ShippingService", "GetQuote"),
        _rpc("payment", "PaymentService", "Charge", peer=True),
        _rpc("shipping", "ShippingService", "ShipOrder"),
        _rpc("cart", "CartService", "EmptyCart"),
        _rpc("email", "EmailService", "SendOrderConfirmation", critical=False),
        _PUBLISH_ORDER,
    ),
    ("cart", "oteldemo.CartService/GetCart"): (_redis("HGET"),),
    ("cart", "oteldemo.CartService/AddItem"): (_redis("HGET"), _redis("HSET")),
    ("cart", "oteldemo.CartService/EmptyCart"): (_redis("DEL"),),
    ("product-catalog", GET_PRODUCT.method): (_SELECT_PRODUCTS,),
    ("product-catalog", LIST_PRODUCTS.method): (_SELECT_PRODUCTS,),
    ("recommendation", RECOMMEND.method): (LIST_PRODUCTS,),
    ("currency", CONVERT.method): (),
    ("ad", GET_ADS.method): (),
    ("payment", "oteldemo.PaymentService/Charge"): (),
    ("shipping", "oteldemo.ShippingService/GetQuote"): (),
    ("shipping", "oteldemo.ShippingService/ShipOrder"): (),
    ("email", "oteldemo.EmailService/SendOrderConfirmation"): (),
    ("accounting", "orders process"): (),
}

# User operations: (root method on frontend, weight). Weights need not sum to 1.
OPERATIONS: tuple[tuple[str, float], ...] = (
    ("GET /api/products/{productId}", 0.40),
    ("GET /", 0.15),
    ("GET /api/cart", 0.20),
    ("POST /api/cart", 0.13),
    ("POST /api/checkout", 0.07),
    ("GET /api/recommendations", 0.05),
)


def check_topology() -> None:
    """Every call lands on a known handler / database; run by the tests."""
    for (service, _method), calls in HANDLERS.items():
        assert service in SERVICES, service
        for ds in calls:
            if ds.kind == DB:
                assert ds.target in DATABASES, ds.target
            else:
                assert (ds.target, ds.method) in HANDLERS, (ds.target, ds.method)
    for method, _w in OPERATIONS:
        assert (ROOT_SERVICE, method) in HANDLERS, method
