"""The secrets detector (security.secrets): every family's formats with their exact spans,
the entropy tiers, the overlaps between rules, and what must not be found (hashes, ids,
README placeholders, variables). The keys are built here from a seeded generator, so no
well-formed credential sits in this file's source."""

from __future__ import annotations

import base64
import json
import random
import string
from pathlib import Path

import pytest

from costwarden.security.findings import Detector, Finding
from costwarden.security.secrets import (
    SECRET_FAMILIES,
    SecretsDetector,
    load_rules,
    shannon_entropy,
)

_ALNUM = string.ascii_letters + string.digits
_B64 = _ALNUM + "+/"
_B64URL = _ALNUM + "-_"
_HEX = "0123456789abcdef"
_rng = random.Random(7)


def _r(chars: str, n: int) -> str:
    return "".join(_rng.choice(chars) for _ in range(n))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt() -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps({"sub": "4821", "exp": 1900000000}).encode())
    return f"{header}.{payload}.{_b64url(_rng.randbytes(32))}"


def _pem(kind: str) -> str:
    body = base64.b64encode(_rng.randbytes(192)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {kind}-----", *lines, f"-----END {kind}-----"])


OPENAI_PROJECT = f"sk-proj-{_r(_B64URL, 74)}T3BlbkFJ{_r(_B64URL, 74)}"
OPENAI_LEGACY = f"sk-{_r(_ALNUM, 20)}T3BlbkFJ{_r(_ALNUM, 20)}"
OPENAI_USER = f"sk-{_r(_ALNUM, 48)}"
ANTHROPIC = f"sk-ant-api03-{_r(_B64URL, 93)}AA"
AWS_ID = "AKIA" + _r(string.ascii_uppercase + "234567", 16)
AWS_SECRET = _r(_B64, 40)
GOOGLE = "AIza" + _r(_B64URL, 35)
GCP_KEY_ID = _r(_HEX, 40)
AZURE_KEY = _r(_B64, 86) + "=="
AZURE_SAK = _r(_B64, 43) + "="
GITHUB = "ghp_" + _r(_ALNUM, 36)
GITHUB_FINE = f"github_pat_{_r(_ALNUM, 22)}_{_r(_ALNUM, 59)}"
GITLAB = "glpat-" + _r(_ALNUM, 20)
SLACK_BOT = f"xoxb-{_r(string.digits, 12)}-{_r(string.digits, 13)}-{_r(_ALNUM, 24)}"
SLACK_HOOK = f"https://hooks.slack.com/services/T{_r('ABCDEFGH0123', 8)}/B{_r('XYZ456', 10)}/{_r(_ALNUM, 24)}"  # noqa: E501
STRIPE_LIVE = "sk_live_" + _r(_ALNUM, 24)
STRIPE_RK = "rk_live_" + _r(_ALNUM, 24)
STRIPE_TEST = "sk_test_" + _r(_ALNUM, 24)
STRIPE_WHSEC = "whsec_" + _r(_ALNUM, 32)
TWILIO_KEY = "SK" + _r(_HEX, 32)
TWILIO_TOKEN = _r(_HEX, 32)
SENDGRID = f"SG.{_r(_B64URL, 22)}.{_r(_B64URL, 43)}"
NPM = "npm_" + _r(_ALNUM, 36)
PYPI = "pypi-AgEIcHlwaS5vcmc" + _r(_B64URL, 80)
JWT = _jwt()
RSA_PEM = _pem("RSA PRIVATE KEY")
OPENSSH_PEM = _pem("OPENSSH PRIVATE KEY")
PASSWORD = "Vq8#kLm2pX" + _r(_ALNUM, 8)
TOKEN32 = _r(_ALNUM, 32)
GCP_BODY = "\\n".join(RSA_PEM.replace("RSA ", "").splitlines())
GCP_JSON = json.dumps(
    {"type": "service_account", "project_id": "acme", "private_key": GCP_BODY + "\\n"}
).replace("\\\\n", "\\n")
BASIC = base64.b64encode(b"deploy:" + PASSWORD.encode()).decode()

# (text, family, the secret the span must cover exactly)
POSITIVES: list[tuple[str, str, str, str]] = [
    ("openai-project", f'client = OpenAI(api_key="{OPENAI_PROJECT}")', "openai_api_key", OPENAI_PROJECT),  # noqa: E501
    ("openai-legacy", f"Authorization: Bearer {OPENAI_LEGACY}", "openai_api_key", OPENAI_LEGACY),
    ("openai-user", f"key = {OPENAI_USER} (from the dashboard)", "openai_api_key", OPENAI_USER),
    ("anthropic", f"ANTHROPIC_API_KEY={ANTHROPIC}\n", "anthropic_api_key", ANTHROPIC),
    ("aws-id", f"Error: AccessDenied for {AWS_ID} on PutObject", "aws_access_key_id", AWS_ID),
    ("aws-secret-env", f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET}", "aws_secret_access_key", AWS_SECRET),  # noqa: E501
    ("aws-secret-json", f'{{"SecretAccessKey": "{AWS_SECRET}"}}', "aws_secret_access_key", AWS_SECRET),  # noqa: E501
    ("aws-secret-csv", f"Access key ID,Secret access key\n{AWS_ID},{AWS_SECRET}", "aws_secret_access_key", AWS_SECRET),  # noqa: E501
    ("aws-secret-k8s", f"- name: AWS_SECRET_ACCESS_KEY\n  value: \"{AWS_SECRET}\"", "aws_secret_access_key", AWS_SECRET),  # noqa: E501
    ("aws-secret-terraform", f'access_key = "{AWS_ID}"\n  secret_key = "{AWS_SECRET}"', "aws_secret_access_key", AWS_SECRET),  # noqa: E501
    ("google", f"maps/api/js?key={GOOGLE}&callback=init", "google_api_key", GOOGLE),
    ("gcp-private-key", GCP_JSON, "gcp_service_account_key", GCP_BODY + "\\n"),
    ("gcp-key-id", f'"private_key_id": "{GCP_KEY_ID}",', "gcp_service_account_key", GCP_KEY_ID),
    ("azure-conn", f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net", "azure_storage_key", AZURE_KEY),  # noqa: E501
    ("azure-sak", f"Endpoint=sb://bus.servicebus.windows.net/;SharedAccessKey={AZURE_SAK}", "azure_storage_key", AZURE_SAK),  # noqa: E501
    ("github-classic", f"git clone https://{GITHUB}@github.com/acme/api.git", "github_token", GITHUB),  # noqa: E501
    ("github-fine", f"gh auth login --with-token <<< {GITHUB_FINE}", "github_token", GITHUB_FINE),
    ("gitlab", f'--header "PRIVATE-TOKEN: {GITLAB}"', "gitlab_token", GITLAB),
    ("slack-bot", f'WebClient(token="{SLACK_BOT}")', "slack_token", SLACK_BOT),
    ("slack-webhook", f"curl -X POST {SLACK_HOOK} -d @msg.json", "slack_webhook", SLACK_HOOK),
    ("stripe-live", f'stripe.api_key = "{STRIPE_LIVE}"', "stripe_key", STRIPE_LIVE),
    ("stripe-restricted", f"require('stripe')('{STRIPE_RK}')", "stripe_key", STRIPE_RK),
    ("stripe-test", f"STRIPE_KEY={STRIPE_TEST}", "stripe_key", STRIPE_TEST),
    ("stripe-webhook", f"STRIPE_WEBHOOK_SECRET={STRIPE_WHSEC}", "stripe_key", STRIPE_WHSEC),
    ("twilio-key", f"Client('{TWILIO_KEY}', secret, sid)", "twilio_api_key", TWILIO_KEY),
    ("twilio-token", f'twilio_auth_token = "{TWILIO_TOKEN}"', "twilio_api_key", TWILIO_TOKEN),
    ("sendgrid", f"SendGridAPIClient('{SENDGRID}')", "sendgrid_api_key", SENDGRID),
    ("npm", f"//registry.npmjs.org/:_authToken={NPM}", "npm_token", NPM),
    ("pypi", f"twine upload dist/* -u __token__ -p {PYPI}", "pypi_token", PYPI),
    ("jwt", f"Set-Cookie: session={JWT}; Path=/; HttpOnly", "jwt", JWT),
    ("private-key-rsa", f"my key:\n{RSA_PEM}\nthanks", "private_key", RSA_PEM),
    ("private-key-openssh", OPENSSH_PEM, "private_key", OPENSSH_PEM),
    ("private-key-cut", RSA_PEM.rsplit("\n", 1)[0], "private_key", RSA_PEM.rsplit("\n", 1)[0]),
    ("postgres", f"DATABASE_URL=postgres://app:{PASSWORD}@db.acme.io:5432/orders", "connection_string", PASSWORD),  # noqa: E501
    ("mongodb-srv", f"mongodb+srv://admin:{PASSWORD}@cluster0.mongodb.net/prod", "connection_string", PASSWORD),  # noqa: E501
    ("redis-no-user", f"REDIS_URL=redis://:{PASSWORD}@cache:6379/0", "connection_string", PASSWORD),  # noqa: E501
    ("amqp", f"amqp://worker:{PASSWORD}@rabbitmq:5672/vhost", "connection_string", PASSWORD),
    ("generic-quoted", f'api_key = "{TOKEN32}"', "generic_secret", TOKEN32),
    ("generic-yaml", f"database:\n  password: {PASSWORD}\n", "generic_secret", PASSWORD),
    ("generic-json-escaped", f'{{\\"client_secret\\": \\"{TOKEN32}\\"}}', "generic_secret", TOKEN32),  # noqa: E501
    ("generic-query", f"GET /v1/series?api_key={TOKEN32}&from=2024", "generic_secret", TOKEN32),
    ("generic-cli", f"./deploy --password={PASSWORD} --verbose", "generic_secret", PASSWORD),
    ("generic-django", "SECRET_KEY = 'x9#k(@Lm2=pQ+7zR*vB-4nW&8sT!cY'", "generic_secret", "x9#k(@Lm2=pQ+7zR*vB-4nW&8sT!cY"),  # noqa: E501
    ("bearer", f"Authorization: Bearer {TOKEN32}", "generic_secret", TOKEN32),
    ("basic-auth", f"Authorization: Basic {BASIC}", "generic_secret", BASIC),
    ("netrc", f"machine api.acme.io login ops password {PASSWORD}", "generic_secret", PASSWORD),
    ("generic-creds", f"creds = {TOKEN32[:13]}.{TOKEN32[13:]}", "generic_secret", f"{TOKEN32[:13]}.{TOKEN32[13:]}"),  # noqa: E501
    ("generic-auth", f'"user_auth": "{BASIC}"', "generic_secret", BASIC),
    ("generic-numbered", f'some_api_token_123 = "{TOKEN32}"', "generic_secret", TOKEN32),
    ("sk-other-provider", f"DEEPSEEK_API_KEY=sk-{_r(_HEX, 32)}", "generic_secret", ""),
]  # fmt: skip


def _only(findings: list[Finding], family: str) -> Finding:
    ours = [f for f in findings if f.family == family]
    assert len(ours) == 1, findings
    return ours[0]


@pytest.mark.parametrize(
    ("text", "family", "secret"), [p[1:] for p in POSITIVES], ids=[p[0] for p in POSITIVES]
)
def test_finds_the_secret_with_its_exact_span(text: str, family: str, secret: str) -> None:
    finding = _only(SecretsDetector().scan(text), family)
    if secret:
        start = text.index(secret)
        assert (finding.start, finding.end) == (start, start + len(secret))
    assert finding.detector == "secrets"
    assert finding.confidence >= 0.5
    assert finding.severity in ("medium", "high", "critical")


@pytest.mark.parametrize(
    "text",
    [
        "request_id=3f2b8c1e-9a4d-4e7f-b6c5-0d1e2f3a4b5c",  # a UUID
        "Merged 9fceb02d0ae598e95dc970b74767f19372d61af8 into main",  # a commit
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "Upgrade from 2.31.0 to 2.32.3; see 3.0.0-rc.1",
        "Order #123-456-7890 shipped 2024-03-15, invoice INV-2024-000481",
        "AKIAIOSFODNN7EXAMPLE and wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",  # AWS's docs
        "Set OPENAI_API_KEY=sk-... before running; api_key=YOUR_API_KEY",
        "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx is what a GitHub token looks like",
        "export ANTHROPIC_API_KEY=<your-anthropic-key>",
        'api_key = os.environ["OPENAI_API_KEY"]',
        'token = request.headers.get("Authorization")',
        "const apiKey = process.env.STRIPE_SECRET_KEY;",
        "password: ${DB_PASSWORD}",
        "DATABASE_URL=postgres://${DB_USER}:${DB_PASS}@db:5432/app",
        "postgresql://user:password@localhost:5432/mydb",
        "max_tokens=1024; usage: {'prompt_tokens': 1532, 'total_tokens': 1743}",
        "tokenizer: cl100k_base",
        "primary_key: id\nsort_key: created_at",
        "The secret to good bread is patience. The key insight is caching.",
        "Bearer token authentication is described in RFC 6750.",
        "password: Optional[str] = None",
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
        "-----END PUBLIC KEY-----",
        "Authorization: Basic ZGVtbzpkZW1v",  # demo:demo
        # names that say "token" or "key" of something that is no secret (after gitleaks'
        # false-positive cases)
        'publicToken = "9Cnzj4p4WGeKLs1Pt8QuKUpRKfFLfRYC9AIKjbJTWit"',
        "csrf-token=Mj2qykJO5rELyHgezQ69nzUX0i3OH67V7+V4eUrLfpuyOuxmiW9rhROG/Whikle15s==",
        '{"nextPageToken": "CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA", "items": []}',
        'notes = "Maven - io.jsonwebtoken:jjwt-jackson-0.11.2"',
        "GITHUB_API_KEY=\nDYNATRACE_API_KEY=\n",
        "primaryKey=16cFBIj2C2qdPVHp7pWnOna8sEXflm",
        "key_length = XSalsa20.key_length",
        '"basic_auth": _check_basic_auth,',
        "",
        "short",
    ],
)
def test_finds_nothing_sure_in_lookalikes(text: str) -> None:
    assert [f for f in SecretsDetector().scan(text) if f.confidence >= 0.5] == []


@pytest.mark.parametrize(
    ("text", "severity", "confidence"),
    [
        # the generic rule: the value's randomness and length decide
        (f'api_key = "{_r(_ALNUM, 32)}"', "high", 0.85),
        (f"secret: {_r(_HEX, 40)}", "high", 0.85),  # hex, scaled to compare with base64
        (f"password: {_r(_ALNUM, 12)}", "medium", 0.7),
        ("password = 'Xk9mP2qL'", "medium", 0.55),
        ('password = "changeme"', "low", 0.2),  # a README's password: reported, but weakly
        ("password = adm-token-for-tests", "low", 0.2),  # words
        ("amqp://guest:guest@localhost:5672/", "medium", 0.3),
    ],
)
def test_generic_values_are_tiered_by_entropy(text: str, severity: str, confidence: float) -> None:
    (finding,) = SecretsDetector().scan(text)
    assert (finding.severity, finding.confidence) == (severity, confidence)


def test_a_specific_rule_wins_over_the_generic_one() -> None:
    text = f'api_key = "{OPENAI_PROJECT}"\nsecret = "{GITHUB}"'
    findings = SecretsDetector().scan(text)
    assert [f.family for f in findings] == ["openai_api_key", "github_token"]
    assert [f.start for f in findings] == [text.index(OPENAI_PROJECT), text.index(GITHUB)]


def test_a_service_account_file_gives_its_key_id_and_its_key() -> None:
    text = GCP_JSON.replace('"project_id": "acme"', f'"private_key_id": "{GCP_KEY_ID}"')
    findings = SecretsDetector().scan(text)
    assert [text[f.start : f.end] for f in findings] == [GCP_KEY_ID, GCP_BODY + "\\n"]
    assert [f.severity for f in findings] == ["high", "critical"]


def test_spans_are_character_offsets_after_non_latin1_text() -> None:
    text = f"Schlüssel 🔑 für das Repo: {GITHUB} — 秘密の鍵 {STRIPE_LIVE}"
    findings = SecretsDetector().scan(text)
    assert [text[f.start : f.end] for f in findings] == [GITHUB, STRIPE_LIVE]


def test_several_secrets_come_back_in_text_order() -> None:
    text = f"{NPM}\n{AWS_ID}\n{SENDGRID}\n{JWT}\n"
    findings = SecretsDetector().scan(text)
    assert [text[f.start : f.end] for f in findings] == [NPM, AWS_ID, SENDGRID, JWT]


def test_a_token_inside_a_longer_token_is_not_reported() -> None:
    assert SecretsDetector().scan("x" + GITHUB + "abc") == []
    assert SecretsDetector().scan("prefix_" + AWS_ID + "ZZZ") == []


def test_a_jwt_needs_a_json_header() -> None:
    fake = "eyJ" + _r(_ALNUM, 20) + ".eyJ" + _r(_ALNUM, 20) + "." + _r(_ALNUM, 30)
    assert SecretsDetector().scan(fake) == []


def test_the_detector_is_a_detector_and_keeps_no_text() -> None:
    detector = SecretsDetector()
    assert isinstance(detector, Detector)
    assert detector.name == "secrets"
    (finding,) = detector.scan(f"token: {GITHUB}")
    assert GITHUB not in repr(finding)


def test_the_built_in_rules_load_and_name_known_families() -> None:
    rules = load_rules()
    assert len(rules.rules) >= 30
    assert {r.family for r in rules.rules} == set(SECRET_FAMILIES)
    assert rules.rules[-1].id == "generic-assignment"  # the catch-all comes last


def test_a_rule_runs_only_when_one_of_its_keywords_occurs(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        "[[rules]]\n"
        'id = "needs-keyword"\nfamily = "generic_secret"\nseverity = "high"\n'
        'confidence = 0.9\nkeywords = ["acme_"]\n'
        "regex = '''[A-Z]{4}[0-9]{8}'''\n"
    )
    detector = SecretsDetector(load_rules(path))
    assert detector.scan("code ABCD12345678") == []
    assert [(f.start, f.end) for f in detector.scan("acme_ code ABCD12345678")] == [(11, 23)]


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ('family = "nope"\nseverity = "high"\nconfidence = 0.9', "unknown family"),
        ('family = "jwt"\nseverity = "fatal"\nconfidence = 0.9', "unknown severity"),
        ('family = "jwt"\nseverity = "high"\nconfidence = 1.5', "confidence"),
        (
            'family = "jwt"\n[[rules.tiers]]\nmin_entropy = 3.0\nseverity = "high"\n'
            "confidence = 0.9",
            "last tier",
        ),
    ],
)
def test_bad_rules_are_refused_with_their_id(tmp_path: Path, rule: str, error: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        "[[rules]]\nid = \"bad-rule\"\nkeywords = [\"x\"]\nregex = '''x'''\n" + rule + "\n"
    )
    with pytest.raises(ValueError, match=f"bad-rule.*{error}"):
        load_rules(path)


def test_a_pattern_re2_cannot_compile_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        "[[rules]]\n"
        'id = "lookahead"\nfamily = "jwt"\nseverity = "high"\nconfidence = 0.9\n'
        "keywords = [\"x\"]\nregex = '''x(?=y)'''\n"
    )
    with pytest.raises(ValueError, match="lookahead"):
        load_rules(path)


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"", 0.0), (b"aaaa", 0.0), (b"abab", 1.0), (b"abcd", 2.0), (bytes(range(16)), 4.0)],
)
def test_shannon_entropy(data: bytes, expected: float) -> None:
    assert shannon_entropy(data) == pytest.approx(expected)
