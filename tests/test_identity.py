"""Token verification: key sources, JWKS behaviour against a real local server, attacks, presets."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import replace

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from rolegate.config import Settings
from rolegate.errors import (
    AuthenticationError,
    ConfigError,
    Forbidden,
    InvalidRequest,
    KeyServerUnavailable,
)
from rolegate.identity import Principal, TokenVerifier, mint_token, parse_duration

try:
    from jwks_server import JWKSServer
except ImportError:  # tests/ imported as a package
    from tests.jwks_server import JWKSServer

SECRET = secrets.token_urlsafe(48)  # generated per run, never committed
ISSUER = "https://id.example.com/"
KEYS = {
    "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "rsa2": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ec256": ec.generate_private_key(ec.SECP256R1()),
    "ec384": ec.generate_private_key(ec.SECP384R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate(),
    "ed448": ed448.Ed448PrivateKey.generate(),
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_pem(name: str) -> str:
    return (
        KEYS[name]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def claims(**extra) -> dict:
    return {"sub": "user-1", "exp": int(time.time()) + 300, **extra}


def sign(payload: dict, key="rsa", alg="RS256", **headers) -> str:
    return jwt.encode(payload, KEYS.get(key, key), algorithm=alg, headers=headers)


def hs_raw(header: dict | str, payload: str, secret: bytes | str = SECRET) -> str:
    """An HS256 token built by hand (PyJWT refuses some of these)."""
    head = header if isinstance(header, str) else json.dumps(header)
    signing_input = f"{b64(head.encode())}.{b64(payload.encode())}"
    key = secret.encode() if isinstance(secret, str) else secret
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def verifier(**settings) -> TokenVerifier:
    return TokenVerifier.from_settings(Settings(**settings))


def rejects(v: TokenVerifier, token: str, code: str = "invalid_token") -> AuthenticationError:
    with pytest.raises(AuthenticationError) as info:
        v.verify(token)
    assert info.value.code == code, info.value.message
    assert info.value.http_status == 401
    assert not token or token not in info.value.message
    return info.value


def jwk(name: str, kid: str) -> dict:
    public = KEYS[name].public_key()
    algorithm = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
    return {**algorithm.to_jwk(public, as_dict=True), "kid": kid, "use": "sig"}


@pytest.fixture
def jwks():
    server = JWKSServer()
    yield server
    server.stop()


# --- key sources -------------------------------------------------------------------------------


def test_hs256_mint_round_trip():
    s = Settings(jwt_secret=SECRET, jwt_issuer=ISSUER, jwt_audience=("rolegate",))
    token = mint_token(s, subject="alice", org="acme", roles=["admin", "viewer"])
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert TokenVerifier.from_settings(s).verify(token) == Principal(
        "alice", "acme", ("admin", "viewer"), ISSUER, None, "user"
    )


def test_hs512_allow_list_is_enforced():
    secret = secrets.token_urlsafe(64)
    v = verifier(jwt_secret=secret, jwt_algorithms=("HS512",))
    token = mint_token(
        Settings(jwt_secret=secret, jwt_algorithms=("HS512",)), subject="a", org=None
    )
    assert jwt.get_unverified_header(token)["alg"] == "HS512"
    assert v.verify(token).subject == "a"
    rejects(v, jwt.encode(claims(), secret, algorithm="HS256"))


@pytest.mark.parametrize("source", ["text", "file"])
@pytest.mark.parametrize(
    ("key", "alg"),
    [
        ("rsa", "RS256"),
        ("rsa", "PS384"),
        ("ec256", "ES256"),
        ("ec384", "ES384"),
        ("ed25519", "EdDSA"),
        ("ed448", "EdDSA"),
    ],
)
def test_public_key_pem(tmp_path, source, key, alg):
    pem = public_pem(key)
    if source == "file":
        (tmp_path / "key.pem").write_text(pem)
        pem = str(tmp_path / "key.pem")
    v = verifier(jwt_public_key=pem)
    principal = v.verify(sign(claims(org="acme"), key, alg, kid="k1"))
    assert (principal.subject, principal.org, principal.key_id) == ("user-1", "acme", "k1")
    rejects(v, sign(claims(), "rsa2", "RS256"))  # another key (or another family)


def test_public_key_from_certificate_pem():
    key = KEYS["rsa"]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    v = verifier(jwt_public_key=cert.public_bytes(serialization.Encoding.PEM).decode())
    assert v.verify(sign(claims())).subject == "user-1"


def test_ec_key_only_accepts_its_curve():
    v = verifier(jwt_public_key=public_pem("ec256"))
    rejects(v, sign(claims(), "ec384", "ES384"))
    assert v.verify(sign(claims(), "ec256", "ES256")).subject == "user-1"


# --- JWKS against a real local server ----------------------------------------------------------


def test_jwks_verifies_rsa_and_ec_keys_and_caches_the_set(jwks):
    jwks.keys = [jwk("rsa", "r1"), jwk("ec256", "e1")]
    v = verifier(jwks_url=jwks.url)
    assert v.verify(sign(claims(), "rsa", "RS256", kid="r1")).key_id == "r1"
    assert v.verify(sign(claims(), "ec256", "ES256", kid="e1")).key_id == "e1"
    rejects(v, sign(claims(), "rsa2", "RS256", kid="r1"))  # right kid, wrong key
    wrong_family = sign(claims(), "ec256", "ES256", kid="r1")  # EC token naming the RSA key
    assert "does not match its key" in rejects(v, wrong_family).message
    assert jwks.requests == 1


def test_jwks_rotation_new_kid_picked_up_removed_kid_expires(jwks):
    jwks.keys = [jwk("rsa", "k1")]
    v = verifier(jwks_url=jwks.url, jwks_lifespan=1, jwks_cooldown=0)
    old, new = sign(claims(), "rsa", kid="k1"), sign(claims(), "rsa2", kid="k2")
    assert v.verify(old).key_id == "k1"
    jwks.keys = [jwk("rsa", "k1"), jwk("rsa2", "k2")]
    assert v.verify(new).key_id == "k2"  # unknown kid -> refetch
    jwks.keys = [jwk("rsa2", "k2")]
    assert v.verify(old).key_id == "k1"  # still cached
    time.sleep(1.1)
    rejects(v, old, "unknown_key")
    assert v.verify(new).key_id == "k2"


def test_jwks_unknown_kid_refetch_is_limited_by_cooldown(jwks):
    jwks.keys = [jwk("rsa", "k1")]
    v = verifier(jwks_url=jwks.url, jwks_cooldown=1)
    assert v.verify(sign(claims(), kid="k1")).key_id == "k1"
    for _ in range(5):
        rejects(v, sign(claims(), kid="nope"), "unknown_key")
    assert jwks.requests == 1
    jwks.keys.append(jwk("rsa2", "k2"))
    rejects(v, sign(claims(), "rsa2", kid="k2"), "unknown_key")  # cooling down
    assert jwks.requests == 1
    time.sleep(1.05)
    for _ in range(3):
        rejects(v, sign(claims(), kid="nope"), "unknown_key")
    assert jwks.requests == 2
    assert v.verify(sign(claims(), "rsa2", kid="k2")).key_id == "k2"
    assert jwks.requests == 2


def test_jwks_token_without_kid(jwks):
    jwks.keys = [jwk("rsa", "k1")]
    v = verifier(jwks_url=jwks.url, jwks_cooldown=0)
    assert v.verify(sign(claims())).key_id is None
    jwks.keys.append(jwk("rsa2", "k2"))
    v = verifier(jwks_url=jwks.url)
    rejects(v, sign(claims()), "unknown_key")


def test_jwks_server_down_is_503():
    server = JWKSServer()
    server.stop()  # nothing listens on its port any more
    v = verifier(jwks_url=server.url)
    with pytest.raises(KeyServerUnavailable) as info:
        v.authenticate("Bearer " + sign(claims(), kid="k1"))
    assert (info.value.http_status, info.value.code) == (503, "key_server_unavailable")


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"[1, 2]", b'{"keys": []}', b"\xff\xfe"])
def test_jwks_garbage_is_503(jwks, body):
    jwks.body = body
    with pytest.raises(KeyServerUnavailable):
        verifier(jwks_url=jwks.url).verify(sign(claims(), kid="k1"))


def test_jwks_timeout_is_503(jwks):
    jwks.keys, jwks.delay = [jwk("rsa", "k1")], 1.0
    with pytest.raises(KeyServerUnavailable):
        verifier(jwks_url=jwks.url, jwks_timeout=0.2).verify(sign(claims(), kid="k1"))


def test_jwks_symmetric_key_is_never_used(jwks):
    jwks.keys = [{"kty": "oct", "kid": "h1", "k": b64(SECRET.encode())}, jwk("rsa", "r1")]
    v = verifier(jwks_url=jwks.url)
    rejects(v, jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "h1"}))
    rejects(v, sign(claims(), kid="h1"))  # an RS256 header does not make the oct key usable


def test_jwks_algorithms_intersect_with_allow_list(jwks):
    jwks.keys = [jwk("rsa", "r1"), jwk("ec256", "e1")]
    v = verifier(jwks_url=jwks.url, jwt_algorithms=("ES256",))
    assert v.verify(sign(claims(), "ec256", "ES256", kid="e1")).key_id == "e1"
    rejects(v, sign(claims(), kid="r1"))


# --- attacks -----------------------------------------------------------------------------------


@pytest.fixture
def rsa_verifier():
    return verifier(jwt_public_key=public_pem("rsa"), jwt_issuer=ISSUER, jwt_audience=("api",))


def good(**extra) -> dict:
    return claims(**{"iss": ISSUER, "aud": "api", **extra})


def test_valid_token_is_accepted(rsa_verifier):
    assert rsa_verifier.verify(sign(good())).issuer == ISSUER


def test_alg_none_is_rejected(rsa_verifier, jwks):
    token = jwt.encode(good(), None, algorithm="none")
    rejects(rsa_verifier, token)
    rejects(verifier(jwt_secret=SECRET), jwt.encode(claims(), None, algorithm="none"))
    rejects(verifier(jwks_url=jwks.url), token)
    assert jwks.requests == 0  # refused before any key lookup


def test_hs256_signed_with_the_public_key_is_rejected(rsa_verifier):
    pem = public_pem("rsa")
    token = hs_raw({"alg": "HS256", "typ": "JWT"}, json.dumps(good()), pem)
    rejects(rsa_verifier, token)


def test_expired_and_leeway(rsa_verifier):
    rejects(rsa_verifier, sign(good(exp=int(time.time()) - 3600)), "token_expired")
    assert rsa_verifier.verify(sign(good(exp=int(time.time()) - 5))).subject == "user-1"
    strict = verifier(jwt_public_key=public_pem("rsa"), jwt_leeway=0)
    rejects(strict, sign(claims(exp=int(time.time()) - 5)), "token_expired")


def test_not_yet_valid(rsa_verifier):
    error = rejects(rsa_verifier, sign(good(nbf=int(time.time()) + 3600)))
    assert "not yet valid" in error.message


def test_issuer(rsa_verifier):
    rejects(rsa_verifier, sign(good(iss="https://evil.example.com/")), "invalid_issuer")
    payload = good()
    del payload["iss"]
    rejects(rsa_verifier, sign(payload), "invalid_issuer")


def test_audience(rsa_verifier):
    rejects(rsa_verifier, sign(good(aud="other")), "invalid_audience")
    payload = good()
    del payload["aud"]
    rejects(rsa_verifier, sign(payload), "invalid_audience")
    assert rsa_verifier.verify(sign(good(aud=["other", "api"]))).subject == "user-1"


def test_audience_unset_is_not_checked_and_warned():
    v = verifier(jwt_public_key=public_pem("rsa"))
    assert v.verify(sign(claims(aud="anything"))).subject == "user-1"
    assert "ROLEGATE_JWT_AUDIENCE is not set: the aud claim is not checked" in v.startup_warnings()
    checked = verifier(jwt_public_key=public_pem("rsa"), jwt_audience=("api",), jwt_issuer=ISSUER)
    assert checked.startup_warnings() == []


def test_missing_exp(rsa_verifier):
    payload = good()
    del payload["exp"]
    assert "exp" in rejects(rsa_verifier, sign(payload)).message


def test_unknown_kid(jwks):
    jwks.keys = [jwk("rsa", "k1")]
    rejects(verifier(jwks_url=jwks.url), sign(claims(), kid="k9"), "unknown_key")


def test_tampered_payload(rsa_verifier):
    head, _, sig = sign(good(sub="mallory")).split(".")
    forged = f"{head}.{b64(json.dumps(good(sub='admin')).encode())}.{sig}"
    assert "signature" in rejects(rsa_verifier, forged).message


def test_oversized_jose_header():
    v = verifier(jwt_secret=SECRET)
    token = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"pad": "x" * 2100})
    assert len(token) < 8192
    assert "header" in rejects(v, token).message
    assert v.verify(jwt.encode(claims(), SECRET, headers={"pad": "x" * 100})).subject == "user-1"


def test_deeply_nested_claims():
    v = verifier(jwt_secret=SECRET)
    header = {"alg": "HS256", "typ": "JWT"}
    exp = int(time.time()) + 300
    shallow = hs_raw(header, f'{{"sub":"a","exp":{exp},"n":{"[" * 10 + "]" * 10}}}')
    assert v.verify(shallow).subject == "a"  # the hand-made token itself is fine
    deep = hs_raw(header, f'{{"sub":"a","exp":{exp},"n":{"[" * 2000 + "]" * 2000}}}')
    assert len(deep) < 8192
    rejects(v, deep)


def test_jku_and_embedded_jwk_headers_are_never_honoured(jwks):
    attacker = JWKSServer()
    try:
        attacker.keys = [jwk("rsa2", "k1")]
        jwks.keys = [jwk("rsa", "k1")]
        forged = sign(claims(), "rsa2", kid="k1", jku=attacker.url, x5u=attacker.url)
        rejects(verifier(jwks_url=jwks.url), forged)
        embedded = sign(claims(), "rsa2", jwk=jwk("rsa2", "k1"))
        rejects(verifier(jwt_public_key=public_pem("rsa")), embedded)
        assert attacker.requests == 0
    finally:
        attacker.stop()


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b", "a.b.c.d", "é.é.é"])
def test_malformed_tokens(token):
    rejects(verifier(jwt_secret=SECRET), token)


def test_overlong_token_passed_directly():
    token = jwt.encode(claims(pad="x" * 9000), SECRET)
    assert "longer" in rejects(verifier(jwt_secret=SECRET), token).message


def test_unexpected_error_fails_closed(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("bug")

    token = jwt.encode(claims(), SECRET)
    monkeypatch.setattr(jwt, "decode", boom)
    rejects(verifier(jwt_secret=SECRET), token)


# --- Authorization header ----------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "xyz"])
def test_missing_token(header):
    with pytest.raises(AuthenticationError) as info:
        verifier(jwt_secret=SECRET).authenticate(header)
    assert info.value.code == "missing_token"
    assert "Bearer" in info.value.message


def test_bearer_scheme_is_case_insensitive():
    token = jwt.encode(claims(), SECRET)
    assert verifier(jwt_secret=SECRET).authenticate(f"bearer  {token} ").subject == "user-1"


def test_authorization_header_over_8kb_is_400():
    v = verifier(jwt_secret=SECRET)
    with pytest.raises(InvalidRequest) as info:
        v.authenticate("Bearer " + "a" * 8186)
    assert (info.value.http_status, info.value.code) == (400, "invalid_request")
    with pytest.raises(AuthenticationError):  # exactly 8192 bytes is not "too long"
        v.authenticate("Bearer " + "a" * 8185)


# --- claim values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"sub": ""},
        {"sub": "*"},
        {"sub": " alice"},
        {"sub": "al\x00ice"},
        {"sub": "a\u202eb"},
        {"sub": "a" * 257},
        {"org": "*"},
        {"org": ""},
        {"org": 42},
        {"org": ["a"]},
        {"roles": 5},
        {"roles": {"admin": True}},
        {"roles": ["admin", 3]},
        {"roles": ["admin", "*"]},
        {"roles": ["ad\nmin"]},
    ],
)
def test_bad_claim_values_are_invalid_token(payload):
    rejects(verifier(jwt_secret=SECRET), jwt.encode(claims(**payload), SECRET))


def test_claim_value_limits_accepted():
    v = verifier(jwt_secret=SECRET)
    p = v.verify(jwt.encode(claims(sub="a" * 256, org=None, roles="admin"), SECRET))
    assert (len(p.subject), p.org, p.roles) == (256, None, ("admin",))


# --- presets -----------------------------------------------------------------------------------


def preset(name: str, payload: dict, **settings) -> Principal:
    v = verifier(jwt_secret=SECRET, claims=name, **settings)
    return v.verify(jwt.encode({"exp": int(time.time()) + 300, **payload}, SECRET))


def test_generic_preset():
    p = preset("generic", {"sub": "u1", "org": "acme", "roles": ["admin", "viewer", "admin"]})
    assert (p.subject, p.org, p.roles) == ("u1", "acme", ("admin", "viewer"))


def test_clerk_v2():
    payload = {
        "sub": "user_2abc",
        "sid": "sess_123",
        "azp": "https://app.example.com",
        "v": 2,
        "o": {"id": "org_2xyz", "slg": "acme", "rol": "admin", "per": ["manage"]},
    }
    p = preset("clerk", payload)
    assert (p.subject, p.org, p.roles) == ("user_2abc", "org_2xyz", ("admin",))
    no_org = preset("clerk", {"sub": "user_2abc", "sid": "sess_123", "v": 2})
    assert (no_org.org, no_org.roles) == (None, ())


def test_clerk_v1_strips_org_prefix():
    payload = {"sub": "user_1", "org_id": "org_1", "org_slug": "acme", "org_role": "org:admin"}
    p = preset("clerk", payload)
    assert (p.org, p.roles) == ("org_1", ("admin",))


def test_supabase_reads_app_metadata_only():
    payload = {
        "aud": "authenticated",
        "iss": "https://ref.supabase.co/auth/v1",
        "sub": "8f1c2c0e-3b7a-4a57-9d6a-2f4f7f0b9a11",
        "role": "authenticated",
        "aal": "aal1",
        "session_id": "f3b4",
        "app_metadata": {"provider": "email", "org_id": "org-1", "role": "editor"},
        "user_metadata": {"org_id": "evil", "role": "owner"},
    }
    p = preset("supabase", payload)
    assert (p.org, p.roles) == ("org-1", ("editor",))
    payload["app_metadata"] = {"provider": "email"}
    p = preset("supabase", payload)
    assert (p.org, p.roles) == (None, ())  # user_metadata is user-editable: ignored
    payload["aud"] = "anon"
    with pytest.raises(AuthenticationError) as info:
        preset("supabase", payload)  # default audience is "authenticated"
    assert info.value.code == "invalid_audience"


def test_supabase_service_role_key_is_not_a_user():
    now = int(time.time())
    key = {"iss": "supabase", "ref": "abc", "role": "service_role", "iat": now, "exp": now + 300}
    with pytest.raises(AuthenticationError) as info:
        preset("supabase", key)
    assert info.value.code == "invalid_token"
    assert "subject" in info.value.message


def test_auth0_org_and_namespaced_roles():
    payload = {
        "sub": "auth0|123",
        "org_id": "org_abc",
        "permissions": ["read:docs"],
        "https://rolegate.example.com/roles": ["editor"],
    }
    p = preset("auth0", payload)
    assert (p.org, p.roles) == ("org_abc", ())  # permissions are not roles
    p = preset("auth0", payload, claim_roles="https://rolegate.example.com/roles")
    assert p.roles == ("editor",)


@pytest.mark.parametrize(
    ("organization", "org"),
    [
        (["acme"], "acme"),
        ({"acme": {"id": "42"}}, "acme"),
        (["acme", "globex"], None),
        ({"acme": {}, "globex": {}}, None),
        ([], None),
    ],
)
def test_keycloak(organization, org):
    payload = {
        "sub": "f:1",
        "organization": organization,
        "realm_access": {"roles": ["offline_access", "editor"]},
        "resource_access": {"account": {"roles": ["manage-account"]}},
    }
    p = preset("keycloak", payload)
    assert (p.org, p.roles) == (org, ("offline_access", "editor"))


def test_claim_overrides_win_over_preset():
    payload = {"uid": "u9", "sub": "ignored", "tenant": {"id": "t1"}, "groups": "ops", "o": {}}
    p = preset("clerk", payload, claim_subject="uid", claim_org="tenant.id", claim_roles="groups")
    assert (p.subject, p.org, p.roles) == ("u9", "t1", ("ops",))


def test_roles_are_returned_whatever_the_trust_setting():
    payload = {"sub": "u1", "org": "acme", "roles": ["admin"]}
    assert preset("generic", payload, trust_token_roles=False).roles == ("admin",)
    assert preset("generic", payload, trust_token_roles=True).roles == ("admin",)


@pytest.mark.parametrize("name", ["generic", "clerk", "supabase", "keycloak"])
def test_mint_round_trip_for_each_preset(name):
    s = Settings(jwt_secret=SECRET, claims=name, jwt_issuer=ISSUER)
    token = mint_token(s, subject="bob", org="acme", roles=["editor"], extra_claims={"x": 1})
    assert jwt.decode(token, options={"verify_signature": False})["x"] == 1
    p = TokenVerifier.from_settings(s).verify(token)
    assert (p.subject, p.org, p.roles, p.issuer) == ("bob", "acme", ("editor",), ISSUER)


def test_mint_expired_token_and_auth0_roles():
    s = Settings(jwt_secret=SECRET)
    rejects(
        TokenVerifier.from_settings(s),
        mint_token(s, subject="a", org=None, ttl_seconds=-3600),
        "token_expired",
    )
    with pytest.raises(ConfigError):
        mint_token(s.replace(claims="auth0"), subject="a", org=None, roles=["x"])


def test_mint_without_secret_is_config_error():
    with pytest.raises(ConfigError):
        mint_token(Settings(jwt_public_key=public_pem("rsa")), subject="a", org=None)


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"jwt_secret": SECRET, "jwt_public_key": "PEM"},
        {"jwt_secret": SECRET, "jwks_url": "https://x/jwks"},
        {"jwt_public_key": public_pem("rsa"), "jwt_algorithms": ("HS256",)},
        {"jwt_public_key": public_pem("rsa"), "jwt_algorithms": ("RS256", "none")},
        {"jwt_public_key": public_pem("ec256"), "jwt_algorithms": ("ES384",)},
        {"jwt_secret": SECRET, "jwt_algorithms": ("RS256",)},
        {"jwks_url": "https://x/jwks", "jwt_algorithms": ("HS256",)},
        {"jwks_url": "file:///etc/passwd"},
        {"jwt_secret": "short"},
        {"jwt_secret": "x" * 40, "jwt_algorithms": ("HS512",)},
        {"jwt_public_key": "/nonexistent/key.pem"},
        {"jwt_public_key": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"},
        {"jwt_secret": SECRET, "claims": "okta"},
        {"jwt_secret": SECRET, "claim_org": "a..b"},
    ],
)
def test_config_errors(settings):
    with pytest.raises(ConfigError):
        verifier(**settings)


def test_config_error_names_the_variables():
    with pytest.raises(ConfigError) as info:
        verifier()
    for name in ("ROLEGATE_JWT_SECRET", "ROLEGATE_JWT_PUBLIC_KEY", "ROLEGATE_JWKS_URL"):
        assert name in info.value.message


def test_weak_rsa_and_private_keys_are_config_errors():
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    pem = weak.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private = KEYS["rsa"].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for value in (pem, private):
        with pytest.raises(ConfigError):
            verifier(jwt_public_key=value.decode())


def test_startup_warnings():
    assert any("ROLEGATE_JWT_ISSUER" in w for w in verifier(jwt_secret=SECRET).startup_warnings())
    supabase = verifier(jwt_secret=SECRET, claims="supabase", jwt_issuer=ISSUER)
    assert supabase.startup_warnings() == []  # audience defaults to "authenticated"
    remote = verifier(jwks_url="http://idp.example.com/jwks", jwt_audience=("a",), jwt_issuer="i")
    assert any("plain http" in w for w in remote.startup_warnings())
    auth0 = verifier(jwt_secret=SECRET, claims="auth0", trust_token_roles=True)
    assert any("ROLEGATE_CLAIM_ROLES" in w for w in auth0.startup_warnings())


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800), ("45", 45), (" 0 ", 0), ("2H", 7200)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1.5h", "-5", "5w", "1h30m", "١٢"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


# --- verified-token cache ------------------------------------------------------------------------


def test_verified_tokens_are_reused_but_never_past_exp(monkeypatch):
    v = verifier(jwt_secret=SECRET, jwt_leeway=0)
    decodes = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: decodes.append(1) or real_decode(*a, **k))
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 2}, SECRET, algorithm="HS256")
    assert v.verify(token).subject == "u"
    assert v.verify(token).subject == "u"
    assert len(decodes) == 1, "the second check of the same token is served from the cache"
    time.sleep(2.2)
    rejects(v, token, "token_expired")


def test_cache_is_bounded(monkeypatch):
    import rolegate.identity as identity

    monkeypatch.setattr(identity, "VERIFIED_CACHE_SIZE", 5)
    v = verifier(jwt_secret=SECRET)
    for i in range(12):
        v.verify(jwt.encode({"sub": f"u{i}", "exp": int(time.time()) + 60}, SECRET))
    assert len(v._verified) <= 5


# -- the principal -> request rule (Rolegate.principal_request) ---------------------------------


def principal(subject, org=None, roles=(), kind="user"):
    return Principal(subject=subject, org=org, roles=roles, issuer=None, key_id=None, kind=kind)


def test_principal_request_refuses_role_names_and_borrowed_key_subjects(core):
    for who in (
        principal("admin", "acme"),
        principal("contractor"),  # an org-local role (globex), refused everywhere
        principal("owner"),
        principal("platform-admin"),
        principal("apikey:0123456789abcdef", "acme"),  # a token claiming to be a key
    ):
        with pytest.raises(Forbidden) as refused:
            core.principal_request(who, "acme", "/projects/1", "read")
        assert refused.value.code == "subject_is_role", who
    key = principal("apikey:0123456789abcdef", "acme", kind="api_key")
    assert core.principal_request(key, "acme", "/x", "read").subject == key.subject


def test_principal_request_trusts_token_roles_only_in_the_token_org(core):
    trusted = replace(core.settings, trust_token_roles=True)
    core.settings = trusted
    who = principal("zed", "acme", roles=("editor",))
    assert core.principal_request(who, "acme", "/p", "read").extra_roles == ("editor",)
    assert core.principal_request(who, "globex", "/p", "read").extra_roles == ()
    core.settings = replace(trusted, trust_token_roles=False)
    assert core.principal_request(who, "acme", "/p", "read").extra_roles == ()
