"""The personal-data detector (security.pii): each family with its exact span and the
confidence its checksum and context earn, the checksums themselves, and the numbers that look
like personal data and are not (dates, versions, order numbers, non-Luhn card lookalikes,
documentation addresses)."""

from __future__ import annotations

import pytest

from costwarden.security.findings import Detector, Finding
from costwarden.security.pii import (
    PII_FAMILIES,
    SEVERITY,
    PiiDetector,
    aadhaar_ok,
    bsn_ok,
    card_issuer_known,
    de_tax_id_ok,
    iban_ok,
    luhn_ok,
    ssn_ok,
)

_DETECTOR = PiiDetector()

# (id, text, family, the span's text, confidence)
POSITIVES: list[tuple[str, str, str, str, float]] = [
    ("email", "Reply to jane.doe@acme-corp.io by Friday.", "email", "jane.doe@acme-corp.io", 0.9),
    ("email-plus", "Reply-To: Jane.Doe+News@Company.CO.UK", "email", "Jane.Doe+News@Company.CO.UK", 0.9),  # noqa: E501
    ("email-query", "https://acme.io/c?email=li.wei@proton.me&x=1", "email", "li.wei@proton.me", 0.9),  # noqa: E501
    ("email-mailto", '<a href="mailto:ops@northwind.de">', "email", "ops@northwind.de", 0.9),
    ("phone-us-intl", "Call +1 (212) 736-5000 after 5pm", "phone", "+1 (212) 736-5000", 0.85),
    ("phone-us-national", "Front desk: (212) 736-5000.", "phone", "(212) 736-5000", 0.8),
    ("phone-us-dots", "reach me at 212.736.5000 tonight", "phone", "212.736.5000", 0.8),
    ("phone-e164", "on-call: +14155552671", "phone", "+14155552671", 0.85),
    ("phone-uk", "Office: +44 20 7946 0958", "phone", "+44 20 7946 0958", 0.85),
    ("phone-uk-trunk", "Office: +44 (0)20 7946 0958", "phone", "+44 (0)20 7946 0958", 0.85),
    ("phone-uk-national", "London office 020 7946 0958", "phone", "020 7946 0958", 0.6),
    ("phone-de", "Tel. +49 30 901820", "phone", "+49 30 901820", 0.85),
    ("phone-de-00", "Tel. 0049 30 901820", "phone", "0049 30 901820", 0.85),
    ("phone-de-national-context", "Telefon: 030 901820 (Zentrale)", "phone", "030 901820", 0.8),
    ("phone-fr", "Mobile: +33 6 12 34 56 78", "phone", "+33 6 12 34 56 78", 0.85),
    ("phone-in-dashes", "Sales: +91-98765-43210", "phone", "+91-98765-43210", 0.85),
    ("phone-csv", "customer,phone\nAcme GmbH,+49 1512 3456789", "phone", "+49 1512 3456789", 0.85),
    ("card-visa-grouped", "card 4111 1111 1111 1111 exp 12/26", "payment_card", "4111 1111 1111 1111", 0.95),  # noqa: E501
    ("card-mc-dashes", "Card: 5555-5555-5555-4444", "payment_card", "5555-5555-5555-4444", 0.95),
    ("card-amex", "Amex on file: 3782 822463 10005", "payment_card", "3782 822463 10005", 0.95),
    ("card-bare-context", "pan=4012888888881881 code=05", "payment_card", "4012888888881881", 0.95),
    ("card-bare", "value 4012888888881881 seen", "payment_card", "4012888888881881", 0.7),
    ("card-json", '{"card_number": "6011111111111117"}', "payment_card", "6011111111111117", 0.95),
    ("card-uatp", "my credit card: 122000000000003", "payment_card", "122000000000003", 0.95),
    ("iban-spaced", "IBAN DE89 3704 0044 0532 0130 00 EUR", "iban", "DE89 3704 0044 0532 0130 00", 0.95),  # noqa: E501
    ("iban-compact", "to GB29NWBK60161331926819.", "iban", "GB29NWBK60161331926819", 0.95),
    ("iban-nl", "Overmaken naar NL91 ABNA 0417 1643 00", "iban", "NL91 ABNA 0417 1643 00", 0.95),
    ("ssn-context", "SSN: 536-22-1847", "us_ssn", "536-22-1847", 0.85),
    ("ssn-bare-context", "social security number 536221847", "us_ssn", "536221847", 0.85),
    ("ssn-no-context", "ref 536-22-1847", "us_ssn", "536-22-1847", 0.4),
    ("nino-context", "NI number AB 12 34 56 C", "uk_nino", "AB 12 34 56 C", 0.9),
    ("nino-spaced", "payroll: JG 10 37 52 A", "uk_nino", "JG 10 37 52 A", 0.7),
    ("bsn", "BSN: 111222333", "nl_bsn", "111222333", 0.9),
    ("bsn-dotted", "burgerservicenummer 1234.56.782", "nl_bsn", "1234.56.782", 0.9),
    ("de-tax-id", "Steuer-ID: 86095742719", "de_tax_id", "86095742719", 0.9),
    ("de-tax-id-spaced", "IdNr 86 095 742 719", "de_tax_id", "86 095 742 719", 0.9),
    ("aadhaar", "Aadhaar 2345 6789 0124", "in_aadhaar", "2345 6789 0124", 0.9),
    ("ipv4-public", "Failed login from 81.2.69.160 at 03:14", "ip_address", "81.2.69.160", 0.75),
    ("ipv4-port", "refused: 81.2.69.160:443", "ip_address", "81.2.69.160", 0.75),
    ("ipv4-end", "banned 81.2.69.160.", "ip_address", "81.2.69.160", 0.75),
    ("ipv4-private", "listening on 10.0.0.12", "ip_address", "10.0.0.12", 0.3),
    ("ipv4-doc", "example host 192.0.2.10", "ip_address", "192.0.2.10", 0.3),
    ("ipv6-public", "from 2606:4700:4700::1111 port 22", "ip_address", "2606:4700:4700::1111", 0.75),  # noqa: E501
    ("ipv6-link-local", "iface fe80::1ff:fe23:4567:890a up", "ip_address", "fe80::1ff:fe23:4567:890a", 0.3),  # noqa: E501
    ("ipv6-doc", "doc: 2001:db8::42", "ip_address", "2001:db8::42", 0.3),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "family", "span", "confidence"),
    [p[1:] for p in POSITIVES],
    ids=[p[0] for p in POSITIVES],
)
def test_finds_the_item_with_its_exact_span(
    text: str, family: str, span: str, confidence: float
) -> None:
    findings = _DETECTOR.scan(text)
    assert len(findings) == 1, findings
    (finding,) = findings
    assert finding.family == family
    assert text[finding.start : finding.end] == span
    assert finding.start == text.index(span)
    assert finding.confidence == confidence
    assert finding.severity == SEVERITY[family]  # type: ignore[index]
    assert finding.detector == "pii"


@pytest.mark.parametrize(
    "text",
    [
        "request 3f2b8c1e-9a4d-4e7f-b6c5-0d1e2f3a4b5c, commit 9fceb02d0ae598e95dc970b74767f19372d61af8",  # noqa: E501
        "Upgrade from 2.31.0 to 2.32.3; python 3.11.7; v1.2.3.4 and version 10.2.0.1",
        "Order #123-456-7890 shipped; invoice 2024-000481; ticket #4155552671",
        "Dates: 2024-03-15, 15.03.2024, 03/15/2024, 2024/03/15 at 14:30:00",
        "Timestamps 1700000000 and 1712345678901",
        "Transaction 4929123456781234 failed",  # 16 digits, Luhn fails
        "Use 1234 5678 9012 3456 as a placeholder card number",  # Luhn fails
        "Prices: $1,249.99, EUR 1.299,00; population 8,336,817",
        "Contact sales@example.com, bob@mail.example, alice@test.invalid",
        "git@github.com:acme/api.git, logo@2x.png, react@18.2.0, @types/node",
        "postgres://app:secret@db.internal:5432/orders",
        "IBAN DE00 1234 5678 9012 3456 78 (wrong check digits)",
        "SSNs 000-12-3456, 666-12-3456, 987-65-4321, 123-45-6789 are all invalid",
        "QQ 12 34 56 C is HMRC's example NINO; GB 12 34 56 A is not allowed",
        "The style guide writes (555) 555-5555",
        "std::vector<int>; Foo::Bar::baz(); MAC 00:1A:2B:3C:4D:5E",
        "ISBN 978-3-16-148410-0; zip 94105-1234; room 12-34",
        "Coordinates 52.520008, 13.404954; pi 3.14159265358979",
        "a number 111222333 without a word that says what it is",
        "",
        "1234",
    ],
)
def test_finds_nothing_sure_in_lookalikes(text: str) -> None:
    assert [f for f in _DETECTOR.scan(text) if f.confidence >= 0.5] == []


def test_spans_are_character_offsets_after_non_latin1_text() -> None:
    text = "Grüße — 電話 +44 20 7946 0958, メール hana@example.jp 😀, IBAN GB29NWBK60161331926819"
    findings = _DETECTOR.scan(text)
    assert [text[f.start : f.end] for f in findings] == [
        "+44 20 7946 0958",
        "hana@example.jp",
        "GB29NWBK60161331926819",
    ]


def test_several_items_come_back_in_text_order() -> None:
    text = "jane@acme.io, +1 (212) 736-5000, 4111 1111 1111 1111, 81.2.69.160"
    families = [f.family for f in _DETECTOR.scan(text)]
    assert families == ["email", "phone", "payment_card", "ip_address"]


@pytest.mark.parametrize(
    ("text", "spans"),
    [
        (
            "4012888888881881 4012-8888-8888-1881 4012 8888 8888 1881",
            ["4012888888881881", "4012-8888-8888-1881", "4012 8888 8888 1881"],
        ),
        (
            "cards 4111 1111 1111 1111 5555 5555 5555 4444",
            ["4111 1111 1111 1111", "5555 5555 5555 4444"],
        ),
        ("call 212 736 5000 12 34", ["212 736 5000"]),
    ],
)
def test_numbers_run_together_are_told_apart(text: str, spans: list[str]) -> None:
    assert [text[f.start : f.end] for f in _DETECTOR.scan(text)] == spans


def test_past_its_budget_a_well_shaped_phone_number_is_reported_unchecked() -> None:
    detector = PiiDetector(max_phone_checks=0)
    (finding,) = detector.scan("Call +1 (212) 736-5000")
    assert (finding.family, finding.confidence) == ("phone", 0.5)


def test_the_detector_is_a_detector_and_keeps_no_text() -> None:
    assert isinstance(_DETECTOR, Detector)
    assert _DETECTOR.name == "pii"
    (finding,) = _DETECTOR.scan("mail jane@acme.io")
    assert isinstance(finding, Finding)
    assert "jane" not in repr(finding)
    assert set(SEVERITY) == set(PII_FAMILIES)


@pytest.mark.parametrize(
    ("digits", "ok"),
    [("4111111111111111", True), ("4111111111111112", False), ("378282246310005", True),
     ("79927398713", True), ("0", True), ("18", True), ("19", False)],
)  # fmt: skip
def test_luhn(digits: str, ok: bool) -> None:
    assert luhn_ok(digits) is ok


@pytest.mark.parametrize(
    ("digits", "known"),
    [("4111111111111111", True), ("4111111111111", True), ("41111111111111", False),
     ("5555555555554444", True), ("2221000000000009", True), ("378282246310005", True),
     ("3782822463100", False), ("6011111111111117", True), ("3530111333300000", True),
     ("9111111111111111", False), ("1700000000000", False)],
)  # fmt: skip
def test_card_issuer_prefixes_and_lengths(digits: str, known: bool) -> None:
    assert card_issuer_known(digits) is known


@pytest.mark.parametrize(
    ("iban", "ok"),
    [("DE89370400440532013000", True), ("DE89370400440532013001", False),
     ("GB29NWBK60161331926819", True), ("NL91ABNA0417164300", True),
     ("FR1420041010050500013M02606", True), ("DE8937040044053201300", False),
     ("XX89370400440532013000", False), ("DEAB370400440532013000", False)],
)  # fmt: skip
def test_iban(iban: str, ok: bool) -> None:
    assert iban_ok(iban) is ok


@pytest.mark.parametrize(
    ("check", "value", "ok"),
    [(bsn_ok, "111222333", True), (bsn_ok, "123456782", True), (bsn_ok, "123456789", False),
     (bsn_ok, "000000000", False), (de_tax_id_ok, "86095742719", True),
     (de_tax_id_ok, "86095742718", False), (de_tax_id_ok, "01234567890", False),
     (de_tax_id_ok, "12345678903", False),  # every digit once: not a tax id
     (aadhaar_ok, "234567890124", True), (aadhaar_ok, "234567890123", False),
     (aadhaar_ok, "123456789012", False), (ssn_ok, "536221847", True),
     (ssn_ok, "000221847", False), (ssn_ok, "666221847", False), (ssn_ok, "936221847", False),
     (ssn_ok, "536001847", False), (ssn_ok, "536220000", False), (ssn_ok, "078051120", False)],
)  # fmt: skip
def test_national_id_checks(check: object, value: str, ok: bool) -> None:
    assert callable(check)
    assert check(value) is ok
