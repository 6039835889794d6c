"""dashboard/jwt_auth: bearer JWTs from an identity provider, verified with PyJWT."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.warnings import InsecureKeyLengthWarning

from costwarden.core.errors import InvalidInput
from costwarden.dashboard.jwt_auth import JwtConfig, JwtIdentity, Refusal, verify
from costwarden.dashboard.roles import Principal

NOW = 1_800_000_000.0
AUDIENCE = "costwarden-dashboard"
ISSUER = "https://idp.example.com"
HS_SECRET = "a-shared-secret-of-at-least-32-bytes!!"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, alg: str) -> Any:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def _write_jwks(path: Path, *jwks: Any) -> Path:
    path.write_text(json.dumps({"keys": list(jwks)}), encoding="utf-8")
    return path


@pytest.fixture
def jwks_file(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> Path:
    return _write_jwks(
        tmp_path / "jwks.json", _jwk(rsa_key, "rsa-1", "RS256"), _jwk(ec_key, "ec-1", "ES256")
    )


@pytest.fixture
def config(jwks_file: Path) -> JwtConfig:
    return JwtConfig(
        audience=AUDIENCE, issuer=ISSUER, algorithms=("RS256", "ES256"), jwks_path=jwks_file
    )


def _claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "alice@example.com",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": int(NOW) - 10,
        "exp": int(NOW) + 600,
        "costwarden_role": "org_admin",
        "org": "org-a",
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def _rs256(key: rsa.RSAPrivateKey, claims: dict[str, Any], kid: str | None = "rsa-1") -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


def _refused(result: JwtIdentity | Refusal, *words: str) -> None:
    assert isinstance(result, Refusal), result
    for word in words:
        assert word in result.reason, result.reason


def test_a_good_rs256_token_signs_in(config: JwtConfig, rsa_key: rsa.RSAPrivateKey) -> None:
    result = verify(_rs256(rsa_key, _claims()), config, NOW)
    assert result == JwtIdentity(
        principal=Principal(role="org_admin", org_id="org-a", key_id=None, via="jwt"),
        subject="alice@example.com",
        expires_at=NOW + 600,
    )


def test_a_good_es256_token_signs_in(
    config: JwtConfig, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token = jwt.encode(
        _claims(costwarden_role="viewer", org=None), ec_key, algorithm="ES256",
        headers={"kid": "ec-1"},
    )
    result = verify(token, config, NOW)
    assert isinstance(result, JwtIdentity)
    assert result.principal == Principal(role="viewer", org_id=None, via="jwt")


def test_a_good_hs256_token_signs_in() -> None:
    config = JwtConfig(audience=AUDIENCE, issuer=ISSUER, algorithms=("HS256",), secret=HS_SECRET)
    result = verify(jwt.encode(_claims(), HS_SECRET, algorithm="HS256"), config, NOW)
    assert isinstance(result, JwtIdentity)
    assert result.principal.org_id == "org-a"
    _refused(
        verify(jwt.encode(_claims(), HS_SECRET + "x", algorithm="HS256"), config, NOW),
        "signature",
    )


def test_a_wrong_signature_is_refused(
    config: JwtConfig, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    # another key, the same kid
    _refused(verify(_rs256(other_rsa_key, _claims()), config, NOW), "signature is wrong")


def test_a_tampered_payload_is_refused(config: JwtConfig, rsa_key: rsa.RSAPrivateKey) -> None:
    header, _, signature = _rs256(rsa_key, _claims()).split(".")
    raised = _b64(json.dumps(_claims(costwarden_role="platform_admin", org=None)).encode())
    _refused(verify(f"{header}.{raised}.{signature}", config, NOW), "signature is wrong")


def test_a_wrong_audience_is_refused(config: JwtConfig, rsa_key: rsa.RSAPrivateKey) -> None:
    token = _rs256(rsa_key, _claims(aud="another-app"))
    _refused(verify(token, config, NOW), "another audience")


def test_a_wrong_issuer_is_refused(config: JwtConfig, rsa_key: rsa.RSAPrivateKey) -> None:
    token = _rs256(rsa_key, _claims(iss="https://evil.example.com"))
    _refused(verify(token, config, NOW), "another issuer")


def test_an_expired_token_is_refused_past_the_leeway(
    config: JwtConfig, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = _rs256(rsa_key, _claims(exp=int(NOW) - 10))
    assert isinstance(verify(token, config, NOW), JwtIdentity)  # within the 30 s leeway
    _refused(verify(token, config, NOW + 21), "expired")


def test_a_token_without_exp_is_refused(config: JwtConfig, rsa_key: rsa.RSAPrivateKey) -> None:
    claims = _claims()
    del claims["exp"]
    _refused(verify(_rs256(rsa_key, claims), config, NOW), "no exp claim")


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"exp": "soon"}, "exp claim is not a number"),
        ({"exp": True}, "exp claim is not a number"),
        ({"nbf": int(NOW) + 3600}, "not valid yet"),
        ({"iat": int(NOW) + 3600}, "issued in the future"),
        ({"aud": None}, "no aud claim"),
        ({"iss": None}, "no iss claim"),
    ],
)
def test_bad_times_and_missing_claims_are_refused(
    config: JwtConfig, rsa_key: rsa.RSAPrivateKey, overrides: dict[str, Any], words: str
) -> None:
    _refused(verify(_rs256(rsa_key, _claims(**overrides)), config, NOW), words)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_alg_none_is_refused(config: JwtConfig) -> None:
    token = jwt.encode(_claims(), None, algorithm="none")
    _refused(verify(token, config, NOW), "'none' is not allowed")
    # hand-made, with a kid and an empty or made-up signature
    header = _b64(json.dumps({"alg": "none", "kid": "rsa-1"}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    for signature in ("", "AAAA"):
        _refused(verify(f"{header}.{payload}.{signature}", config, NOW), "not allowed")
    hs_config = JwtConfig(
        audience=AUDIENCE, issuer=ISSUER, algorithms=("HS256",), secret=HS_SECRET
    )
    _refused(verify(token, hs_config, NOW), "'none' is not allowed")


def test_an_hs256_token_signed_with_the_public_key_is_refused(
    config: JwtConfig, rsa_key: rsa.RSAPrivateKey
) -> None:
    # the classic confusion: the RSA public key (which anyone has) used as an HMAC secret
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = _b64(json.dumps(_claims(costwarden_role="platform_admin", org=None)).encode())
    signature = _b64(hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    _refused(verify(f"{header}.{payload}.{signature}", config, NOW), "'HS256' is not allowed")


def test_a_jwks_config_cannot_allow_an_hmac_algorithm(jwks_file: Path) -> None:
    for algorithms in (("RS256", "HS256"), ("none",), ()):
        with pytest.raises(InvalidInput):
            JwtConfig(
                audience=AUDIENCE, issuer=ISSUER, algorithms=algorithms, jwks_path=jwks_file
            )
    with pytest.raises(InvalidInput):
        JwtConfig(audience=AUDIENCE, issuer=ISSUER, algorithms=("RS256",), secret=HS_SECRET)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"algorithms": ("HS256",)},  # neither key
        {"algorithms": ("HS256",), "secret": "short"},
        {"algorithms": ("HS512",), "secret": HS_SECRET},  # 38 bytes < 64
        {"algorithms": ("HS256",), "secret": HS_SECRET, "jwks_path": Path("jwks.json")},
        {"algorithms": ("HS256",), "secret": HS_SECRET, "audience": ""},
        {"algorithms": ("HS256",), "secret": HS_SECRET, "leeway_seconds": -1},
        {"algorithms": ("HS256",), "secret": HS_SECRET, "role_claim": ""},
    ],
)
def test_a_bad_config_is_refused(kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"audience": AUDIENCE, "issuer": ISSUER, **kwargs}
    with pytest.raises(InvalidInput):
        JwtConfig(**arguments)


def test_the_secret_is_not_in_the_configs_repr() -> None:
    config = JwtConfig(audience=AUDIENCE, issuer=ISSUER, algorithms=("HS256",), secret=HS_SECRET)
    assert HS_SECRET not in repr(config)


def test_an_unknown_kid_is_refused(config: JwtConfig, rsa_key: rsa.RSAPrivateKey) -> None:
    _refused(verify(_rs256(rsa_key, _claims(), kid="rsa-9"), config, NOW), "unknown key id")


def test_a_missing_kid_is_refused_when_the_file_holds_several_keys(
    config: JwtConfig, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    _refused(verify(_rs256(rsa_key, _claims(), kid=None), config, NOW), "names no key")
    single = JwtConfig(
        audience=AUDIENCE,
        issuer=ISSUER,
        algorithms=("RS256",),
        jwks_path=_write_jwks(tmp_path / "one.json", _jwk(rsa_key, "rsa-1", "RS256")),
    )
    assert isinstance(verify(_rs256(rsa_key, _claims(), kid=None), single, NOW), JwtIdentity)


def test_the_keys_algorithm_must_be_the_tokens(
    jwks_file: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    config = JwtConfig(
        audience=AUDIENCE, issuer=ISSUER, algorithms=("RS256", "PS256", "ES256"),
        jwks_path=jwks_file,
    )
    # a PS256 token naming the RS256 key
    token = jwt.encode(_claims(), rsa_key, algorithm="PS256", headers={"kid": "rsa-1"})
    _refused(verify(token, config, NOW), "is not its key's")
    # an ES256 token naming the RSA key
    token = jwt.encode(_claims(), ec_key, algorithm="ES256", headers={"kid": "rsa-1"})
    _refused(verify(token, config, NOW), "is not its key's")


def test_a_short_rsa_key_is_refused_without_a_warning(tmp_path: Path) -> None:
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    config = JwtConfig(
        audience=AUDIENCE,
        issuer=ISSUER,
        algorithms=("RS256",),
        jwks_path=_write_jwks(tmp_path / "short.json", _jwk(short, "short", "RS256")),
    )
    with pytest.warns(InsecureKeyLengthWarning):  # PyJWT's encode only warns
        token = _rs256(short, _claims(), kid="short")
    _refused(verify(token, config, NOW), "cannot verify")


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"costwarden_role": "root"}, "costwarden_role claim is not a role"),
        ({"costwarden_role": ["platform_admin"]}, "costwarden_role claim is not a role"),
        ({"costwarden_role": None}, "no costwarden_role claim"),
        ({"org": None}, "needs an org"),  # an org_admin without one
        ({"org": ""}, "org claim is not an org id"),
        ({"org": 7}, "org claim is not an org id"),
        ({"costwarden_role": "platform_admin"}, "platform-wide"),  # with an org
    ],
)
def test_bad_role_and_org_claims_are_refused(
    config: JwtConfig, rsa_key: rsa.RSAPrivateKey, overrides: dict[str, Any], words: str
) -> None:
    _refused(verify(_rs256(rsa_key, _claims(**overrides)), config, NOW), words)


def test_the_claim_names_are_configured(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    config = JwtConfig(
        audience=AUDIENCE, issuer=ISSUER, algorithms=("RS256",), jwks_path=jwks_file,
        role_claim="https://example.com/role", org_claim="tenant",
    )
    claims = _claims(costwarden_role=None, org=None)
    claims.update({"https://example.com/role": "viewer", "tenant": "org-b"})
    result = verify(_rs256(rsa_key, claims), config, NOW)
    assert isinstance(result, JwtIdentity)
    assert result.principal == Principal(role="viewer", org_id="org-b", via="jwt")
    # the default names mean nothing here
    _refused(verify(_rs256(rsa_key, _claims()), config, NOW), "no https://example.com/role")


def test_an_unreadable_jwks_file_is_a_refusal(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    missing = JwtConfig(
        audience=AUDIENCE, issuer=ISSUER, algorithms=("RS256",), jwks_path=tmp_path / "none.json"
    )
    _refused(verify(_rs256(rsa_key, _claims()), missing, NOW), "cannot be read")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    bad = JwtConfig(
        audience=AUDIENCE, issuer=ISSUER, algorithms=("RS256",), jwks_path=tmp_path / "bad.json"
    )
    _refused(verify(_rs256(rsa_key, _claims()), bad, NOW), "cannot be read")
    (tmp_path / "empty.json").write_text('{"keys": []}', encoding="utf-8")
    empty = JwtConfig(
        audience=AUDIENCE, issuer=ISSUER, algorithms=("RS256",), jwks_path=tmp_path / "empty.json"
    )
    _refused(verify(_rs256(rsa_key, _claims()), empty, NOW), "no usable key")


def test_a_rotated_jwks_file_is_read_again(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    path = _write_jwks(tmp_path / "jwks.json", _jwk(rsa_key, "rsa-1", "RS256"))
    config = JwtConfig(audience=AUDIENCE, issuer=ISSUER, algorithms=("RS256",), jwks_path=path)
    assert isinstance(verify(_rs256(rsa_key, _claims()), config, NOW), JwtIdentity)
    _write_jwks(path, _jwk(other_rsa_key, "rsa-2", "RS256"))
    os.utime(path, ns=(1, 2))  # a different mtime even on a coarse clock
    _refused(verify(_rs256(rsa_key, _claims()), config, NOW), "unknown key id")
    token = _rs256(other_rsa_key, _claims(), kid="rsa-2")
    assert isinstance(verify(token, config, NOW), JwtIdentity)


@pytest.mark.parametrize("token", [None, "", "abc", "a.b.c", "..", "é.é.é", "x" * 20000, 42])
def test_garbage_is_refused(config: JwtConfig, token: object) -> None:
    assert isinstance(verify(token, config, NOW), Refusal)


@pytest.fixture(scope="module")
def module_jwks_config(
    tmp_path_factory: pytest.TempPathFactory,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> JwtConfig:
    path = _write_jwks(
        tmp_path_factory.mktemp("jwks") / "jwks.json",
        _jwk(rsa_key, "rsa-1", "RS256"),
        _jwk(ec_key, "ec-1", "ES256"),
    )
    return JwtConfig(
        audience=AUDIENCE, issuer=ISSUER, algorithms=("RS256", "ES256"), jwks_path=path
    )


_SEGMENT = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=80
)


@settings(max_examples=300, deadline=None)
@given(token=st.text(max_size=300))
def test_verify_never_raises_on_random_text(token: str) -> None:
    hs = JwtConfig(audience=AUDIENCE, issuer=ISSUER, algorithms=("HS256",), secret=HS_SECRET)
    assert isinstance(verify(token, hs, NOW), Refusal)


@settings(max_examples=300, deadline=None)
@given(
    header=st.one_of(
        _SEGMENT,
        st.dictionaries(
            st.sampled_from(["alg", "kid", "typ", "crit", "b64"]),
            st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10),
                      st.sampled_from(["HS256", "RS256", "none"])),
        ).map(lambda header: _b64(json.dumps(header).encode())),
    ),
    payload=st.one_of(
        _SEGMENT,
        st.dictionaries(
            st.sampled_from(["exp", "aud", "iss", "org", "costwarden_role", "nbf"]),
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
        ).map(lambda claims: _b64(json.dumps(claims).encode())),
    ),
    signature=_SEGMENT,
)
def test_verify_never_raises_on_random_segments(
    module_jwks_config: JwtConfig, header: str, payload: str, signature: str
) -> None:
    hs = JwtConfig(audience=AUDIENCE, issuer=ISSUER, algorithms=("HS256",), secret=HS_SECRET)
    assert isinstance(verify(f"{header}.{payload}.{signature}", hs, NOW), Refusal)
    assert isinstance(verify(f"{header}.{payload}.{signature}", module_jwks_config, NOW), Refusal)
