"""Tenants and API keys. Keys are `sg_<random>`; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Session

from streamguard.db.models import ApiKey, Tenant, utcnow

KEY_PREFIX = "sg_"
#: Characters of the key kept in clear (indexed) to find the candidate row.
LOOKUP_PREFIX_LEN = 12


def hash_key(key: str) -> str:
    """SHA-256 hex of a full API key. Keys carry 256 random bits, so no salt or KDF is needed."""
    return hashlib.sha256(key.encode()).hexdigest()


def get_tenant(*, session: Session, tenant_id: str) -> Tenant | None:
    return session.get(Tenant, tenant_id)


def get_tenant_by_name(*, session: Session, name: str) -> Tenant | None:
    return session.scalars(sa.select(Tenant).where(Tenant.name == name)).one_or_none()


def get_or_create_tenant(*, session: Session, name: str) -> Tenant:
    """The tenant called `name`, created (and flushed) if missing."""
    tenant = get_tenant_by_name(session=session, name=name)
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_tenant_key(*, session: Session, tenant_name: str) -> tuple[Tenant, str]:
    """Issue a new API key for `tenant_name` (creating the tenant); returns the plaintext once."""
    tenant = get_or_create_tenant(session=session, name=tenant_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(tenant_id=tenant.id, prefix=key[:LOOKUP_PREFIX_LEN], key_hash=hash_key(key)))
    session.flush()
    return tenant, key


def authenticate_tenant_id(*, session: Session, key: str,
                           digest: str | None = None) -> str | None:
    """The id of the tenant owning an unrevoked `key`, or None: one query (the key row holds
    the tenant id; its foreign key guarantees the tenant). Hashes are compared in constant
    time; `digest` is `hash_key(key)` when the caller has it already."""
    digest = digest or hash_key(key)
    candidates = session.execute(
        sa.select(ApiKey.key_hash, ApiKey.tenant_id).where(
            ApiKey.prefix == key[:LOOKUP_PREFIX_LEN], ApiKey.revoked_at.is_(None))).all()
    for key_hash, tenant_id in candidates:
        if hmac.compare_digest(key_hash, digest):
            return str(tenant_id)
    return None


def authenticate(*, session: Session, key: str) -> Tenant | None:
    """The tenant owning an unrevoked `key`, or None. Hashes are compared in constant time."""
    tenant_id = authenticate_tenant_id(session=session, key=key)
    return None if tenant_id is None else session.get(Tenant, tenant_id)


def revoke_key(*, session: Session, key: str) -> bool:
    """Revoke `key`; False when it is unknown or already revoked."""
    row = session.scalars(
        sa.select(ApiKey).where(ApiKey.prefix == key[:LOOKUP_PREFIX_LEN],
                                ApiKey.key_hash == hash_key(key),
                                ApiKey.revoked_at.is_(None))).one_or_none()
    if row is None:
        return False
    row.revoked_at = utcnow()
    session.flush()
    return True
