"""Settings of the local delivery leaf (built by the sidecar from its config)."""

import ssl
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 25
    security: str = "none"  # none | starttls | tls
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = ""
    rate_per_second: float = 0.0  # 0: unlimited
    timeout: float = 30.0
    retry_backoff: tuple[float, ...] = (1.0, 5.0, 15.0)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
