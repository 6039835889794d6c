"""Personal data in a prompt: e-mail addresses, phone numbers, payment cards, IBANs, national
ids (US SSN, UK NINO, Dutch BSN, German tax id, Indian Aadhaar) and IP addresses.

Every family that has a checksum is checked, because a checksum is what tells a card number
from an order number: Luhn and the issuer's prefix and length for cards, mod 97 and the
country's length for IBANs, the 11-proof for a BSN, ISO 7064 for the German tax id, Verhoeff
for Aadhaar. Numbers that have none (an SSN, a NINO) and numbers whose checksum passes one
time in ten or eleven (BSN, tax id, Aadhaar) need the words around them ("SSN", "BSN",
"Steuer-ID") before they are reported with any confidence. Phone numbers are checked by
``phonenumbers`` (libphonenumber's metadata: which numbers each country actually issues).

Speed: one RE2 pass over the text finds every candidate of every family (a DFA, linear in
the text, no backtracking); Python then looks only at the few candidates it found. A short
text that cannot hold one (no "@", no run of digits) skips the pass (see ``_MAYBE``). The
pass matches the text's Latin-1 bytes (characters past U+00FF read as ``?``), so a byte
offset is a character offset and a finding's span is exact for redaction.
``phonenumbers`` is the slow part (tens of microseconds a number): it sees only candidates
shaped like a phone number, at most ``max_phone_checks`` a scan; past that a well-shaped
number is reported unchecked with confidence 0.5. A finding never holds the matched text,
and nothing is cached.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, Protocol, cast, get_args

import phonenumbers
import re2  # type: ignore[import-untyped]

from costwarden.security.findings import Finding, Severity
from costwarden.security.matching import SMALL_TEXT

PiiFamily = Literal[
    "email",
    "phone",
    "payment_card",
    "iban",
    "us_ssn",
    "uk_nino",
    "nl_bsn",
    "de_tax_id",
    "in_aadhaar",
    "ip_address",
]
PII_FAMILIES: tuple[PiiFamily, ...] = get_args(PiiFamily)

SEVERITY: dict[PiiFamily, Severity] = {
    "email": "medium",
    "phone": "medium",
    "payment_card": "high",
    "iban": "high",
    "us_ssn": "high",
    "uk_nino": "high",
    "nl_bsn": "high",
    "de_tax_id": "high",
    "in_aadhaar": "high",
    "ip_address": "low",
}


class _Match(Protocol):
    def span(self, group: int = 0) -> tuple[int, int]: ...


class _Pattern(Protocol):
    groupindex: dict[bytes, int]

    def finditer(self, data: bytes) -> Iterator[_Match]: ...


# ------------------------------------------------------------------ candidates

_HEX4 = rb"[0-9A-Fa-f]{1,4}"
_CANDIDATES = b"|".join(
    [
        # local@domain.tld (the local part's start is checked in Python)
        rb"(?P<email>[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
        rb"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24})",
        rb"(?P<ipv4>\b[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\b)",
        # full (eight groups), compressed (a::b, a:b::), or from :: (::1, ::ffff:a:b)
        rb"(?P<ipv6>\b(?:%(h)s:){7}%(h)s|\b(?:%(h)s:){1,7}:(?:%(h)s(?::%(h)s){0,6})?"
        rb"|::%(h)s(?::%(h)s){0,6})" % {b"h": _HEX4},
        rb"(?P<iban>\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30})",
        rb"(?P<nino>\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]\b)",
        # numbers: international (+44 ...), grouped (415-555-2671, 4111 1111 1111 1111,
        # 123-45-6789, 030 12345678), parenthesised ((415) 555-2671) and bare runs of 9 or
        # 11 to 19 digits. A date (2024-03-15) does not match: a four-digit first group
        # before a dash needs three digits after it.
        rb"(?P<num>\+[1-9][0-9 ().\-/]{6,22}[0-9]"
        rb"|\b00[1-9][0-9]{0,2}[ .\-/][0-9 ().\-/]{5,20}[0-9]"
        rb"|\([0-9]{2,5}\)[ .\-/]?[0-9]{3,8}(?:[ .\-/][0-9]{2,8})*"
        rb"|\b[0-9]{2,3}(?:[ .\-/][0-9]{2,8}){2,}"
        rb"|\b[0-9]{2,5}[ .\-/][0-9]{5,8}"
        rb"|\b[0-9]{4,5}(?:[ ./][0-9]{2,8}|-[0-9]{3,8})(?:[ .\-/][0-9]{2,8})*"
        rb"|\b(?:[0-9]{9}|[0-9]{11,19})\b)",
    ]
)


# Something every candidate above holds, found by ``re`` (no GIL hand-over, see
# costwarden.security.matching): a short text without it has no candidate, and RE2 is not
# called. Every alternative holds "@" (email), ":" (ipv6), "+" and a digit and six more of a
# number's characters (international), or two digits or a digit and "." (the rest). Each
# branch starts with one of a few characters, so ``re`` skips the rest of a text in C.
_MAYBE = re.compile(rb"[@:]|\+[1-9][0-9 ().\-/]{6}|[0-9][0-9.]")


def _compile(pattern: bytes) -> _Pattern:
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.log_errors = False
    options.max_mem = 64 << 20
    options.longest_match = True  # of the shapes that match at a place, the longest
    return cast(_Pattern, re2.compile(pattern, options))


# ------------------------------------------------------------------ checksums


def luhn_ok(digits: str) -> bool:
    """The Luhn check every payment card number passes."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(compact: str) -> bool:
    """ISO 13616: the country's length, and mod 97 of the rearranged number is 1."""
    if _IBAN_LENGTH.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def bsn_ok(digits: str) -> bool:
    """The Dutch BSN's 11-proof: 9*d1 + 8*d2 + ... + 2*d8 - d9 is a multiple of 11."""
    if len(digits) != 9 or digits == "000000000":
        return False
    total = sum((9 - i) * (ord(ch) - 48) for i, ch in enumerate(digits[:8]))
    return (total - (ord(digits[8]) - 48)) % 11 == 0


def de_tax_id_ok(digits: str) -> bool:
    """The German Steuer-ID: 11 digits, no leading 0, in the first ten one digit twice or
    three times and the others at most once, and an ISO 7064 MOD 11,10 check digit."""
    if len(digits) != 11 or digits[0] == "0":
        return False
    counts = sorted((digits[:10].count(d) for d in set(digits[:10])), reverse=True)
    if counts[0] not in (2, 3) or (len(counts) > 1 and counts[1] > 1):
        return False
    product = 10
    for ch in digits[:10]:
        total = (ord(ch) - 48 + product) % 10 or 10
        product = total * 2 % 11
    check = 11 - product
    return (0 if check == 10 else check) == ord(digits[10]) - 48


_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def aadhaar_ok(digits: str) -> bool:
    """Aadhaar: 12 digits, the first 2-9, the last a Verhoeff check digit."""
    if len(digits) != 12 or digits[0] in "01":
        return False
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[i % 8][ord(ch) - 48]]
    return c == 0


def ssn_ok(digits: str) -> bool:
    """An SSN the SSA could have issued: area not 000, 666 or 9xx, group not 00, serial not
    0000, and not one of the famous examples (078-05-1120, 123-45-6789, 219-09-9999)."""
    if len(digits) != 9:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return digits not in ("078051120", "123456789", "219099999")


# Issuer prefixes (ranges of the number's first digits) and the lengths each issues.
_IIN: tuple[tuple[int, int, int, frozenset[int]], ...] = (
    # (low, high, digits of prefix, lengths)
    (4, 4, 1, frozenset({13, 16, 19})),  # Visa
    (51, 55, 2, frozenset({16})),  # Mastercard
    (2221, 2720, 4, frozenset({16})),  # Mastercard 2-series
    (34, 34, 2, frozenset({15})),  # American Express
    (37, 37, 2, frozenset({15})),
    (6011, 6011, 4, frozenset({16, 17, 18, 19})),  # Discover
    (644, 649, 3, frozenset({16, 17, 18, 19})),
    (65, 65, 2, frozenset({16, 17, 18, 19})),
    (3528, 3589, 4, frozenset({16, 17, 18, 19})),  # JCB
    (300, 305, 3, frozenset({14, 15, 16, 17, 18, 19})),  # Diners Club
    (3095, 3095, 4, frozenset({14, 15, 16, 17, 18, 19})),
    (36, 36, 2, frozenset({14, 15, 16, 17, 18, 19})),
    (38, 39, 2, frozenset({14, 15, 16, 17, 18, 19})),
    (62, 62, 2, frozenset({16, 17, 18, 19})),  # UnionPay
    (2200, 2204, 4, frozenset({16, 17, 18, 19})),  # Mir
    (50, 50, 2, frozenset({12, 13, 14, 15, 16, 17, 18, 19})),  # Maestro
    (56, 58, 2, frozenset({12, 13, 14, 15, 16, 17, 18, 19})),
    (60, 60, 2, frozenset({16, 19})),  # RuPay, Maestro
    (63, 63, 2, frozenset({16, 17, 18, 19})),
    (67, 67, 2, frozenset({12, 13, 14, 15, 16, 17, 18, 19})),
    (81, 82, 2, frozenset({16})),  # RuPay, UnionPay
    (1, 1, 1, frozenset({15})),  # UATP (AirPlus)
)


def card_issuer_known(digits: str) -> bool:
    """Whether a known issuer uses this prefix at this length."""
    for low, high, width, lengths in _IIN:
        if low <= int(digits[:width]) <= high and len(digits) in lengths:
            return True
    return False


_IBAN_LENGTH: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

# ------------------------------------------------------------------ context words

# Looked for (as regular expressions, each word from a word boundary) in the 48 characters
# before a candidate and the 24 after, lower-cased.
_CONTEXT_WORDS: dict[str, bytes] = {
    "card": rb"card|visa|master ?card|amex|american express|discover|credit|debit|cc\b|"
            rb"payment|pan\b|cvv|cvc|expir|exp\b|kreditkarte|carte|tarjeta",
    "us_ssn": rb"ssn|social security|soc\.? ?sec|ss ?#|ss no",
    "nl_bsn": rb"bsn|burgerservicenummer|sofi-?nummer|citizen service number",
    "de_tax_id": rb"steuer-? ?id|steueridentifikationsnummer|identifikationsnummer|idnr|"
                 rb"steuernummer|tax ?id|tin\b",
    "in_aadhaar": rb"aadhaa?r|uidai|uid\b",
    "uk_nino": rb"national insurance|nino\b|ni ?number|ni ?no\b|nin\b",
    "phone": rb"tel\b|tel\.|telephone|telefon|phone|call|mobile|cell|fax|whatsapp|sms\b|"
             rb"text me|contact|ring\b|handy|mob\b|ph\b|reach",
    "not_phone": rb"order|invoice|ref\b|ref\.|#|tracking|account|acct|serial|sku|id\b|ticket|"
                 rb"build|version|po\b",
    "version": rb"version|ver\.|release|build",
}  # fmt: skip
_CONTEXT: dict[str, re.Pattern[bytes]] = {
    kind: re.compile(rb"(?<![a-z0-9])(?:" + words + rb")") for kind, words in _CONTEXT_WORDS.items()
}

_RESERVED_EMAIL_DOMAINS = ("example.com", "example.net", "example.org")
# RFC 2606 and 6761 names, and the private ones hosts have (not mailboxes on the internet).
_RESERVED_EMAIL_TLDS = (
    "example",
    "test",
    "invalid",
    "localhost",
    "local",
    "internal",
    "lan",
    "localdomain",
)
_FILE_TLDS = frozenset(
    "png jpg jpeg gif svg webp bmp ico tif tiff js mjs ts tsx jsx py rb go rs java kt css "
    "scss html htm json yaml yml toml md txt csv xml pdf zip gz tar lock map wasm".split()
)
_NINO_BAD_PREFIXES = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


class PiiDetector:
    """Finds personal data; each finding's span covers the item alone (the number without
    the words around it, the whole address)."""

    name = "pii"

    def __init__(
        self,
        *,
        phone_regions: Sequence[str] = ("GB", "DE", "FR", "NL", "IN"),
        max_phone_checks: int = 16,
    ) -> None:
        """``phone_regions``: the countries a national number (trunk prefix 0, no ``+``) is
        read as, in order (a North American one is read as US); ``max_phone_checks``: how
        many candidates one scan hands ``phonenumbers``."""
        self._regions = tuple(phone_regions)
        self._max_phone_checks = max_phone_checks
        self._pattern = _compile(_CANDIDATES)
        index = self._pattern.groupindex
        self._handlers: dict[int, _Handler] = {
            index[b"email"]: _listed(_email),
            index[b"ipv4"]: _listed(_ip),
            index[b"ipv6"]: _listed(_ip),
            index[b"iban"]: _listed(_iban),
            index[b"nino"]: _listed(_nino),
            index[b"num"]: self._number,
        }
        # the most frequent alternative first: one span() call for most candidates
        self._groups = (index[b"num"], *sorted(set(self._handlers) - {index[b"num"]}))
        for region in self._regions:  # load the metadata now, not in the first request
            phonenumbers.example_number(region)

    def scan(self, text: str) -> list[Finding]:
        if len(text) < 5:
            return []
        data = text.encode("latin-1", "replace")
        if len(data) < SMALL_TEXT and _MAYBE.search(data) is None:
            return []
        found: list[Finding] = []
        budget = [self._max_phone_checks]
        for match in self._pattern.finditer(data):
            for group in self._groups:  # the one alternative that matched
                start, end = match.span(group)
                if start >= 0:
                    break
            found.extend(self._handlers[group](data, start, end, budget))
        return found

    # ---------------------------------------------------------------- numbers

    def _number(self, data: bytes, start: int, end: int, budget: list[int]) -> list[Finding]:
        before = data[start - 1] if start > 0 else 32
        if (
            before in _WORDISH
            or before in b"./"
            or (
                before == 44 and start > 1 and data[start - 2] in _DIGITS  # 44: ","
            )
        ):
            return []  # the tail of a longer token: v1.2.3456789, ID_123456789, 3,141592653
        if end < len(data) and (data[end] in _WORDISH or data[end] == ord("-")):
            return []
        candidate = data[start:end].decode("latin-1")
        runs = _GROUPS.findall(candidate)
        digits = "".join(runs)
        groups = tuple(map(len, runs))
        seps = frozenset(candidate).difference(_DIGIT_CHARS)
        plus = candidate[0] == "+" or candidate.startswith("00")
        n = len(digits)
        if not plus and len(groups) == 3 and _is_date(candidate, groups, seps):
            return []
        if not plus:
            if 13 <= n <= 19 and seps <= {" ", "-"} and len(seps) <= 1:
                finding = _card(data, start, end, digits, groups)
                if finding is not None:
                    return [finding]
            if n == 12 and groups in ((12,), (4, 4, 4)) and seps <= {" ", "-"}:
                finding = _aadhaar(data, start, end, digits, groups)
                if finding is not None:
                    return [finding]
            if n == 11 and groups in ((11,), (2, 3, 3, 3)) and seps <= {" "}:
                finding = _de_tax_id(data, start, end, digits)
                if finding is not None:
                    return [finding]
            if n == 9:
                finding = _nine_digits(data, start, end, digits, groups, seps)
                if finding is not None:
                    return [finding]
            if n > 19 or len(seps) > 1:  # numbers written one after another: 4111... 5555...
                cards = _cards_within(data, start, candidate)
                if cards:
                    return cards
        return self._phone(data, start, end, candidate, digits, groups, plus, budget)

    def _phone(
        self,
        data: bytes,
        start: int,
        end: int,
        candidate: str,
        digits: str,
        groups: tuple[int, ...],
        plus: bool,
        budget: list[int],
    ) -> list[Finding]:
        nanp = False
        if not plus:
            shape = _NANP_WITHIN.search(candidate)  # also inside numbers run together
            if shape is not None:
                nanp = True
                start, end, candidate = start + shape.start(), start + shape.end(), shape.group()
                runs = _GROUPS.findall(candidate)
                digits, groups = "".join(runs), tuple(map(len, runs))
        n = len(digits)
        if not 7 <= n <= 15 or (not plus and len(groups) < 2 and candidate[0] != "("):
            return []
        national = not plus and not nanp and digits[0] == "0" and 9 <= n <= 12
        if not (plus or nanp or national):
            return []
        around = _around(data, start, end)
        context = _has(around, "phone")
        if _has(data[max(0, start - 16) : start].lower(), "not_phone") and not context:
            return []
        if national and not context and len(groups) < 3:
            return []  # 0301234567 or 030 12345678 alone: too like any other number
        if budget[0] <= 0:
            confidence = 0.5 if (plus or nanp) else 0.3
            return [_finding("phone", confidence, start, end)]
        if plus:  # +44 ... needs no region; 0044 ... needs one whose exit code is 00
            regions: tuple[str, ...] = ("ZZ",) if candidate[0] == "+" else ("GB",)
        else:
            regions = ("US",) if nanp else self._regions
        for region in regions:
            budget[0] -= 1
            spans = _phone_spans(candidate, region)
            if spans:
                confidence = 0.85 if plus else 0.8 if (nanp or context) else 0.6
                return [_finding("phone", confidence, start + s, start + e) for s, e in spans]
        return []


_Handler = Callable[[bytes, int, int, list[int]], list[Finding]]


def _listed(check: Callable[[bytes, int, int], Finding | None]) -> _Handler:
    def handler(data: bytes, start: int, end: int, budget: list[int]) -> list[Finding]:
        finding = check(data, start, end)
        return [] if finding is None else [finding]

    return handler


def _phone_spans(candidate: str, region: str) -> list[tuple[int, int]]:
    matcher = phonenumbers.PhoneNumberMatcher(
        candidate, region, leniency=phonenumbers.Leniency.VALID, max_tries=4
    )
    return [(m.start, m.end) for m in matcher]


_WORDISH = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_DIGITS = frozenset(b"0123456789")
_DIGIT_CHARS = frozenset("0123456789")
_NOT_USERINFO = frozenset(b"/?#&= \t\r\n\"'<>")
_GROUPS = re.compile(r"[0-9]+")
# (212) 736-5000, 212-736-5000, 212.736.5000, 1-212-736-5000: a North American number.
_NANP_WITHIN = re.compile(
    r"(?<![0-9])(?:1[ .-])?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}"
    r"(?![0-9])"
)


_DATE_SHAPES = frozenset({(2, 2, 4), (4, 2, 2), (2, 2, 2), (1, 2, 4)})


def _is_date(candidate: str, groups: tuple[int, ...], seps: frozenset[str]) -> bool:
    """15.03.2024, 03/15/2024, 2024/03/15, 15-03-24: a date, not a number."""
    if len(seps) != 1 or groups not in _DATE_SHAPES:
        return False
    parts = [int(p) for p in _GROUPS.findall(candidate)]
    if groups[0] == 4:
        parts = parts[::-1]
    first, second = parts[0], parts[1]
    return (1 <= first <= 31 and 1 <= second <= 12) or (1 <= first <= 12 and 1 <= second <= 31)


def _around(data: bytes, start: int, end: int) -> bytes:
    return (data[max(0, start - 48) : start] + b" " + data[end : end + 24]).lower()


def _has(window: bytes, kind: str) -> bool:
    return _CONTEXT[kind].search(window) is not None


def _finding(family: PiiFamily, confidence: float, start: int, end: int) -> Finding:
    return Finding(
        detector="pii",
        family=family,
        severity=SEVERITY[family],
        confidence=confidence,
        start=start,
        end=end,
    )


def _card(
    data: bytes, start: int, end: int, digits: str, groups: tuple[int, ...]
) -> Finding | None:
    if not luhn_ok(digits) or len(set(digits)) < 2:
        return None
    context = _has(_around(data, start, end), "card")
    if card_issuer_known(digits):
        grouped = groups in ((4, 4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4, 3), (4, 4, 4, 1))
        return _finding("payment_card", 0.95 if (grouped or context) else 0.7, start, end)
    if context:
        return _finding("payment_card", 0.6, start, end)
    return None


# A card number's usual shapes, each with one kind of separator (the backreference).
_CARD_SHAPES = re.compile(
    r"(?<![0-9])(?:[0-9]{4}([ -]?)[0-9]{4}\1[0-9]{4}\1[0-9]{1,7}"
    r"|[0-9]{4}([ -]?)[0-9]{6}\2[0-9]{4,5})(?![0-9])"
)


def _cards_within(data: bytes, start: int, candidate: str) -> list[Finding]:
    found = []
    for match in _CARD_SHAPES.finditer(candidate):
        runs = _GROUPS.findall(match.group())
        finding = _card(
            data, start + match.start(), start + match.end(), "".join(runs), tuple(map(len, runs))
        )
        if finding is not None:
            found.append(finding)
    return found


def _aadhaar(
    data: bytes, start: int, end: int, digits: str, groups: tuple[int, ...]
) -> Finding | None:
    if not aadhaar_ok(digits):
        return None
    if _has(_around(data, start, end), "in_aadhaar"):
        return _finding("in_aadhaar", 0.9, start, end)
    return _finding("in_aadhaar", 0.4 if groups == (4, 4, 4) else 0.25, start, end)


def _de_tax_id(data: bytes, start: int, end: int, digits: str) -> Finding | None:
    if not de_tax_id_ok(digits):
        return None
    if _has(_around(data, start, end), "de_tax_id"):
        return _finding("de_tax_id", 0.9, start, end)
    return _finding("de_tax_id", 0.3, start, end)


def _nine_digits(
    data: bytes,
    start: int,
    end: int,
    digits: str,
    groups: tuple[int, ...],
    seps: frozenset[str],
) -> Finding | None:
    """An SSN (123-45-6789) or a BSN (123456782, 1234.56.782): the words around decide."""
    around = _around(data, start, end)
    if groups in ((9,), (4, 2, 3), (3, 3, 3)) and bsn_ok(digits) and _has(around, "nl_bsn"):
        return _finding("nl_bsn", 0.9, start, end)
    if groups in ((3, 2, 4), (9,)) and seps <= {"-", " "} and ssn_ok(digits):
        if _has(around, "us_ssn"):
            return _finding("us_ssn", 0.85, start, end)
        if groups == (3, 2, 4) and seps == {"-"}:
            return _finding("us_ssn", 0.4, start, end)
    return None


def _email(data: bytes, start: int, end: int) -> Finding | None:
    if start > 0 and data[start - 1] in _EMAIL_LOCAL:
        return None  # a local part longer than 64 characters: not an address
    while start < end and data[start] == ord("."):
        start += 1
    scheme = data.rfind(b"://", max(0, start - 80), start)
    if scheme >= 0 and not any(b in _NOT_USERINFO for b in data[scheme + 3 : start]):
        return None  # a URL's user and host: postgres://user:pw@db.acme.io
    local, _, domain = data[start:end].decode("latin-1").partition("@")
    if not local or local.endswith(".") or ".." in local or local == "git":
        return None
    domain = domain.lower()
    tld = domain.rsplit(".", 1)[-1]
    if tld in _FILE_TLDS:
        return None  # logo@2x.png, chunk@1.2.3.js
    if domain in _RESERVED_EMAIL_DOMAINS or domain.endswith(
        tuple("." + d for d in _RESERVED_EMAIL_DOMAINS)
    ):
        return None  # RFC 2606: documentation addresses are nobody's
    if tld in _RESERVED_EMAIL_TLDS:
        return None
    return _finding("email", 0.9, start, end)


_EMAIL_LOCAL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")


def _ip(data: bytes, start: int, end: int) -> Finding | None:
    before = data[start - 1] if start > 0 else 32
    after = data[end] if end < len(data) else 32
    following = data[end + 1] if end + 1 < len(data) else 32
    if (
        before in _WORDISH
        or after in _WORDISH
        or before == 46
        or (  # 46: "."
            after == 46 and following in _DIGITS
        )
    ):
        return None  # 1.2.3.4.5, v1.2.3.4, x1.2.3.4
    if (before == 58 or after == 58) and end - start > 15 and b":" in data[start:end]:
        return None  # an IPv6 candidate that is part of a longer colon run
    try:
        address = ipaddress.ip_address(data[start:end].decode("latin-1"))
    except ValueError:
        return None
    if address.version == 6 and (end - start < 6 or not _DIGITS.intersection(data[start:end])):
        return None  # a::b, Bad::Cafe
    if address.version == 4 and _has(data[max(0, start - 24) : start].lower(), "version"):
        return None
    public = address.is_global and not address.is_multicast
    return _finding("ip_address", 0.75 if public else 0.3, start, end)


def _iban(data: bytes, start: int, end: int) -> Finding | None:
    text = data[start:end].decode("latin-1")
    length = _IBAN_LENGTH.get(text[:2])
    if length is None:
        return None
    # The candidate may run into the next word (DE89 3704 ... 00 EUR): take the country's
    # length of characters, then insist the IBAN ends there.
    taken = 0
    stop = 0
    for i, ch in enumerate(text):
        if ch != " ":
            taken += 1
            if taken == length:
                stop = i + 1
                break
    if taken != length:
        return None
    rest = data[start + stop : start + stop + 2]
    if rest[:1].isalnum() or (rest[:1] == b" " and rest[1:2].isdigit() and length > 15):
        return None
    compact = text[:stop].replace(" ", "")
    if not iban_ok(compact):
        return None
    return _finding("iban", 0.95, start, start + stop)


def _nino(data: bytes, start: int, end: int) -> Finding | None:
    text = data[start:end].decode("latin-1")
    if text[:2] in _NINO_BAD_PREFIXES:
        return None
    if _has(_around(data, start, end), "uk_nino"):
        return _finding("uk_nino", 0.9, start, end)
    spaced = text.count(" ") == 4
    return _finding("uk_nino", 0.7 if spaced else 0.4, start, end)
