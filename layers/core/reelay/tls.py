"""The TLS context of a function's outbound HTTPS clients, made once per process.

Loading the CA bundle is most of what making an ``httpx.Client`` costs (tens of milliseconds
of a cold start, per client). Every provider adapter (``reelay.providers.http``) and every
fetcher (``reelay.fetch``) of a function shares one verifying context instead.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context(*, trust_env: bool = True) -> ssl.SSLContext:
    """httpx's default verifying context (certifi's CA bundle; with ``trust_env``, as httpx's own
    default, ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set). Shared: an ``SSLContext`` is safe to
    use from several clients and threads."""
    return httpx.create_ssl_context(trust_env=trust_env)
