"""Temporary AWS credentials from an Amazon Cognito identity pool.

Apps that send straight to Kinesis (a mobile or desktop client, a kiosk) should not
carry long-lived keys. With an identity pool they get an identity (``GetId``) and
short-lived credentials for it (``GetCredentialsForIdentity``); the pool's IAM role limits
what those credentials can do (e.g. ``kinesis:PutRecords`` on one stream)::

    creds = CognitoCredentials("us-east-1:1234abcd-...", "us-east-1")
    async with Producer("logs", credentials=creds) as producer:
        ...

The credentials are fetched on first use and refreshed before they expire, by every
client that uses this object. Secrets are never logged or shown in ``repr``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from datetime import datetime, timezone
from typing import Any

from . import errors
from ._core import aws as _aws
from ._core.validate import check_number, shown

__all__ = ["CognitoCredentials", "Logins"]

log = logging.getLogger("shardflow.auth")

Logins = (
    Mapping[str, str]
    | Callable[[], Mapping[str, str]]
    | Callable[[], Awaitable[Mapping[str, str]]]
)
"""Identity provider tokens, e.g. ``{"accounts.google.com": id_token}``, or a function
(sync or async) returning fresh ones at each refresh."""


class CognitoCredentials:
    """A :class:`~shardflow.CredentialSource` backed by a Cognito identity pool.

    ``identity_pool_id`` is the pool (``region:uuid``); ``region_name`` its region.
    ``logins`` authenticates the identity with a provider's tokens (None: an
    unauthenticated identity, if the pool allows them). ``endpoint_url`` points at another
    endpoint (a local one in tests). ``refresh_margin`` (300 s): refresh this long before
    expiry, or a third of the credentials' lifetime when that is shorter.

    Pass it as ``credentials=`` to a Producer or Consumer. The identity id is kept after
    the first fetch (``identity_id``), so a refresh only gets new credentials for it.
    """

    __slots__ = (
        "_botocore",
        "_clock",
        "_endpoint_url",
        "_identity_id",
        "_logins",
        "_refresh_margin",
        "identity_pool_id",
        "region_name",
    )

    def __init__(
        self,
        identity_pool_id: str,
        region_name: str,
        logins: Logins | None = None,
        endpoint_url: str | None = None,
        *,
        refresh_margin: float = 300.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not isinstance(identity_pool_id, str) or ":" not in identity_pool_id:
            raise ValueError(
                f"identity_pool_id must look like 'region:uuid', got {shown(identity_pool_id)}"
            )
        if not isinstance(region_name, str) or not region_name:
            raise ValueError(
                f"region_name must be a region such as 'us-east-1', got {shown(region_name)}"
            )
        _aws.check_endpoint(endpoint_url, region_name)
        if logins is not None and not (isinstance(logins, Mapping) or callable(logins)):
            raise TypeError("logins must be a mapping of provider to token, a callable, or None")
        margin = check_number("refresh_margin", refresh_margin, finite=False, unit="seconds")
        self.identity_pool_id = identity_pool_id
        self.region_name = region_name
        self._logins = logins
        self._endpoint_url = endpoint_url
        self._refresh_margin = margin
        self._clock = clock
        self._identity_id: str | None = None
        self._botocore: Any = None

    def __repr__(self) -> str:
        return f"CognitoCredentials(identity_pool_id={self.identity_pool_id!r})"

    @property
    def identity_id(self) -> str | None:
        """The Cognito identity id, once the first fetch got it."""
        return self._identity_id

    def botocore_credentials(self) -> Any:
        """The shared refreshable credentials object that clients sign with."""
        if self._botocore is None:
            self._botocore = _aws.refreshable_credentials(
                self._fetch,
                method="cognito-identity",
                refresh_margin=self._refresh_margin,
                time_fetcher=self._clock,
            )
        return self._botocore

    async def _current_logins(self) -> dict[str, str] | None:
        source = self._logins
        if source is None:
            return None
        value: Any = source() if callable(source) else source
        if inspect.isawaitable(value):
            value = await value
        if not isinstance(value, Mapping):
            raise TypeError("logins() must return a mapping of provider to token")
        return dict(value)

    async def fetch(self) -> datetime:
        """Ask Cognito for a set of credentials now; return their expiry time (UTC).

        Useful to fail fast at startup (the identity id is kept for later). Clients do
        not need it: they fetch and refresh the credentials they sign with by themselves.
        Raises :class:`errors.AccessDenied` (pool or provider refused),
        :class:`errors.ResourceNotFound` (no such pool) or a transport error
        (:class:`errors.EndpointUnreachable`, :class:`errors.RequestTimeout`). Safe to
        cancel.
        """
        data = await self._fetch()
        return datetime.fromisoformat(data["expiry_time"])

    async def _fetch(self) -> dict[str, Any]:
        logins = await self._current_logins()
        extra: dict[str, Any] = {"Logins": logins} if logins else {}
        async with AsyncExitStack() as stack:
            client = await _aws.open_client(
                stack,
                "cognito-identity",
                endpoint_url=self._endpoint_url,
                region_name=self.region_name,
                max_attempts=3,
            )
            if self._identity_id is None:
                answer = await _aws.call(
                    client,
                    "get_id",
                    "cognito-identity",
                    IdentityPoolId=self.identity_pool_id,
                    **extra,
                )
                self._identity_id = str(answer["IdentityId"])
                log.info(
                    "cognito identity %s from pool %s", self._identity_id, self.identity_pool_id
                )
            try:
                answer = await _aws.call(
                    client,
                    "get_credentials_for_identity",
                    "cognito-identity",
                    IdentityId=self._identity_id,
                    **extra,
                )
            except errors.ResourceNotFound:
                self._identity_id = None  # the identity was deleted: get a new one next time
                raise
        creds = answer["Credentials"]
        expiration = creds["Expiration"]
        if isinstance(expiration, int | float):
            expiration = datetime.fromtimestamp(expiration, timezone.utc)
        elif expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=timezone.utc)
        log.debug("cognito credentials for %s expire at %s", self._identity_id, expiration)
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretKey"],
            "token": creds["SessionToken"],
            "expiry_time": expiration.isoformat(),
        }
