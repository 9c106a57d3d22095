"""Find and redact personal data in text before annotators or datasets see it.

Two backends share one interface (`find`, `redact`, `describe`) and one placeholder format (`[TYPE]`):
`Redactor` here (the rules, always available) and `PresidioRedactor` (align/privacy/presidio_backend.py:
Microsoft Presidio with a spaCy NER model, which adds names and places). `make_redactor`
(align/privacy/backend.py) picks one (`backend: auto | presidio | rules`); `describe()` says which
ran, for manifests.

The rules' detectors, each validated rather than pattern-only, so look-alikes survive:
- EMAIL: `local@domain.tld` (a regex; the domain needs a dot and a 2+ letter top-level label), and
  e-mails spelled out to dodge filters ("jane dot doe at example dot com", "jdoe [at] example.com"):
  at least one of `at`/`dot` written as a word or in brackets, and a known top-level domain at the end;
  a plain " at " with real dots counts when the local part has a dot, `_` or a digit, or when an
  e-mail word comes just before it ("email jdoe at example.org", "e-mail me: jdoe at example.org"),
  so "look at example.com" is left alone;
- PHONE: `phonenumbers`' PhoneNumberMatcher (valid numbers, grouped as the region writes them), for
  national numbers of `phone_region` and any `+`-prefixed international number; a national number
  written as a bare run of 10 (or 1 + 10) digits only when `phonenumbers` finds it valid AND a phone
  word comes just before it ("call", "cell", "phone", "text me at", "my number is" ...), as bare digits
  are more often ids, order numbers and integers;
- SSN: US Social Security numbers written 3-2-4 with dashes or spaces and inside the ranges the SSA
  issues (area not 000, 666 or 9xx; group not 00; serial not 0000), or 9 bare digits right after
  "SSN" / "social security (number)";
- ADDRESS: a US-style street line (house number, capitalised street name, a street suffix such as
  Street/Ave/Lane, an optional Apt/Suite/Unit) with an optional ", City, ST 12345" after it, a
  "City, ST 12345" on its own, and "PO Box 123"; in lower case ("12 oak street") only with a suffix
  that is seldom anything but a street (street, avenue, road, lane, boulevard, crescent, terrace,
  parkway and their abbreviations; not "way", "place", "drive", "court") and street-name words that
  are not function words or units ("3 blocks down the road", "a 2 hour drive" are left alone);
- DOB: a date (3/14/1988, 1988-03-14, March 14, 1988, 14 March 1988, 4th of July 1990, March 1988)
  right after "born (on)", "DOB", "date of birth", "birth date" or "birthday (is)"; other dates are
  left alone (order and delivery dates are what support text is about);
- CARD: 13-19 digits, unbroken or grouped as cards are printed (4-4-4-4, 4-6-5, ...), with a card
  network's prefix and a valid Luhn check digit (`stdnum.luhn`);
- IBAN: country code, check digits and account, validated by `stdnum.iban` (country length and mod-97);
- IP: IPv4 and IPv6 addresses that `ipaddress` accepts (so 2.13.0 or 10:30:00 are left alone),
  except loopback and unspecified ones (127.0.0.1, ::1, 0.0.0.0), which identify no machine;
- user patterns: `{TYPE: regex}`, each match replaced by `[TYPE]`.

What the rules do not catch: personal names, places and street addresses not written in the US
pattern above (other countries' formats), dates of birth without one of the words above, national ids
other than the above, account numbers without a checksum, numbers written out in words or split by
unusual separators, bare national phone numbers without a phone word before them, phone numbers of
other regions written without their `+` prefix, and anything inside images or encoded text. A
four-part version number (1.2.3.4) is redacted as an IP address. The presidio backend adds names and
places (NER); benchmarks/pii_redaction.py measures both on data/pii_eval.jsonl. Add user patterns for
what a data set is known to hold; review samples before sharing.

Modes: `redact` replaces each finding with its typed placeholder (`[EMAIL]`, `[PHONE]`, `[SSN]`,
`[ADDRESS]`, `[DOB]`, `[CARD]`, `[IBAN]`, `[IP]`, `[TYPE]`; presidio adds `[PERSON]`, `[LOCATION]`); `drop`
leaves out a record with any finding; `off` does nothing. Counts per type are reported; the values
found are never logged or written.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from align.core.errors import AlignError

MODES = ("redact", "drop", "off")
# The placeholders the built-in detectors write (user patterns add theirs).
TYPES = ("EMAIL", "PHONE", "SSN", "ADDRESS", "DOB", "CARD", "IBAN", "IP")

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
# Digits in groups separated by at most one space or dash; the validator decides.
_CARD = re.compile(r"(?<![\w.,-])\d(?:[ -]?\d){12,18}(?![\w-]|[.,]\d)")
# Issuer prefixes (IIN ranges) of the card networks: Visa 4; Mastercard 51-55 and 2221-2720; Maestro
# 50, 56-69; Discover and UnionPay 6; Amex 34, 37; JCB 35; Diners 30, 36, 38, 39. A Luhn-valid number
# outside them (1 in 10 random numbers is Luhn-valid) is not a card.
_CARD_PREFIX = re.compile(r"^(?:[456]|3[04-9]|2(?:2[2-9]|[3-6]\d|7[01]|720))")
# How card numbers are printed when grouped: 4-4-4-4 (and 4-4-4-4-3 for 19 digits), 4-6-5 (Amex),
# 4-6-4 (Diners). Other groupings of 13-19 digits (account or order numbers) are not cards.
_CARD_GROUPS = {(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4)}
_NO_SEPARATORS = str.maketrans("", "", " -")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
# Hex groups and colons (and a dotted IPv4 tail); `ipaddress` decides what is an address.
_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f:.]*:[0-9A-Fa-f.]*:)[0-9A-Fa-f:.]{2,45}(?![\w:])")
_DOTTED_SINGLE_DIGIT = re.compile(r"(?:^|\D)\d\.|\.\d(?:\D|$)")

# A bare national number counts as a phone only after one of these words (within the few characters
# before it): the words people use to give a number, not "order" or "account".
_PHONE_WORDS = re.compile(
    r"(?i)\b(?:phone|cell|cellphone|mobile|call|called|calling|text|texts|tel|telephone|"
    r"reach|contact|fax|sms|whatsapp|callback|number is|my number|number:)\b[^\d\n]{0,20}$"
)
_BARE_PHONE = re.compile(r"(?<![\w.+/-])1?\d{10}(?![\w-]|[.,]\d)")
# SSN: 3-2-4 digits with the same separator twice; issued ranges are checked in code.
_SSN = re.compile(r"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])")
_SSN_BARE = re.compile(r"(?i)\b(?:ssn|social security(?: number| no\.?)?)\W{0,3}(?:is\W{0,2})?(\d{9})(?!\w)")
# E-mails spelled out: `at` and `dot` as words or bracketed ([at], (dot)), or as the symbols.
_AT_WORD = r"\s+at\s+"
_AT_BRACKET = r"\s*[\[({<]\s*at\s*[\])}>]\s*"
_DOT_SPELLED = r"(?:\s+dot\s+|\s*[\[({<]\s*dot\s*[\])}>]\s*)"
_LABEL = r"[a-z0-9](?:[a-z0-9_%+-]*[a-z0-9])?"
# Top-level domains: the common generic ones and any two-letter country code. A closed list keeps
# "me at jane dot doe at example dot com" from ending the address at "doe".
_TLD = r"(?:com|org|net|edu|gov|mil|int|info|biz|name|mobi|io|ai|app|dev|xyz|online|site|tech|email|mail|[a-z]{2})"
# At most 5 dots each side: addresses have few, and a bound keeps a long "x dot x dot ..." linear.
_SPELLED_EMAIL = re.compile(
    rf"(?i)(?<![\w.'@-])(?P<local>{_LABEL}(?:(?:{_DOT_SPELLED}|\.){_LABEL}){{0,5}})"
    rf"(?P<at>{_AT_WORD}|{_AT_BRACKET}|\s*@\s*)"
    rf"(?P<domain>{_LABEL}(?:(?:{_DOT_SPELLED}|\.){_LABEL}){{0,4}}(?:{_DOT_SPELLED}|\.){_TLD})(?![\w-]|\.\w)"
)
# US street addresses. Street names must be capitalised: lower case would match "2 days in a row".
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Way|Place|Pl|"
    r"Terrace|Ter|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Loop|Alley|Crescent|Close)"
)
_CITY_STATE_ZIP = r"[A-Z][a-z]+(?:[ -][A-Z][a-z]+){0,2},?\s+[A-Z]{2}\s+\d{5}(?:-\d{4})?"
_ADDRESS = re.compile(
    rf"(?<![\w-])\d{{1,6}}[A-Z]?\s+(?:(?:[NSEW]\.?|North|South|East|West)\s+)?"
    rf"(?:[A-Z][a-z]+|\d{{1,3}}(?:st|nd|rd|th))(?:\s+[A-Z][a-z]+){{0,3}}\s+{_STREET_SUFFIX}\b\.?"
    rf"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|#)\.?\s*#?[A-Za-z0-9-]+)?"
    rf"(?:,\s+{_CITY_STATE_ZIP})?"
    rf"|(?<![\w-])(?i:P\.?\s?O\.?\s+Box)\s+\d{{1,6}}(?!\w)"
    rf"|(?<![\w-]){_CITY_STATE_ZIP}(?!\w)"
)
# Lower-case street lines: only suffixes that are seldom anything but a street ("way", "place",
# "drive", "court", "close" are ordinary words: "1 more way", "a 2 hour drive"), and name words that
# are not function words or units ("3 blocks down the road").
_STREET_SUFFIX_LOWER = r"(?:street|st|avenue|ave|road|rd|lane|ln|boulevard|blvd|crescent|terrace|parkway|pkwy)"
_NOT_STREET_WORD = (
    r"(?:the|a|an|and|or|of|to|in|on|at|by|for|from|with|into|onto|down|up|over|off|out|"
    r"my|your|our|their|his|her|its|this|that|these|those|more|other|some|any|no|each|"
    r"one|two|three|few|hours?|mins?|minutes?|days?|weeks?|months?|years?|miles?|km|"
    r"blocks?|times?|lanes?|roads?|streets?|items?|boxes|steps?)"
)
_ADDRESS_LOWER = re.compile(
    rf"(?<![\w./:-])\d{{1,6}}\s+(?:(?:north|south|east|west|[nsew])\s+)?"
    rf"(?:(?!{_NOT_STREET_WORD}\b)[a-z][a-z']+\s+){{1,3}}{_STREET_SUFFIX_LOWER}\b\.?"
    rf"(?:,?\s+(?:apt|apartment|suite|ste|unit)\.?\s*#?[a-z0-9-]+)?(?![\w-])"
)
# An e-mail written "name at domain.tld" counts after one of these words (within a few characters).
_EMAIL_WORDS = re.compile(r"(?i)\b(?:e-?mail(?:ed)?|mail|address|inbox|contact|reach|write|send)\b[^\n]{0,24}$")
# ... unless the word before " at " is one of these: "his email address at example.com", "write us at".
_NOT_A_MAILBOX = frozenset(
    "address email e-mail mail inbox account page site website web form link it me us him her them you one".split()
)
# Dates of birth: a date right after a birth word. Numeric (3/14/1988, 14.03.1988, 1988-03-14) or with
# a month name (March 14, 1988; 14 March 1988; 4th of July 1990; Mar 1988).
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"(?:[0-3]?\d(?:st|nd|rd|th)?)"
_DATE = (
    rf"(?:\d{{1,2}}[/.-]\d{{1,2}}[/.-](?:\d{{4}}|\d{{2}})|\d{{4}}-\d{{1,2}}-\d{{1,2}}"
    rf"|{_MONTH}\s+{_DAY},?\s+\d{{4}}|{_DAY}\s+(?:of\s+)?{_MONTH},?\s+\d{{4}}|{_MONTH},?\s+\d{{4}})"
)
_DOB = re.compile(
    rf"(?i)\b(?:born|d\.?o\.?b\.?|date\s+of\s+birth|birth\s*date|birthday)"
    rf"(?:\s+(?:is|was|on|in|of|:|-))*\s*:?\s*(?P<date>{_DATE})(?![\w/.-]\d)"
)
_TYPE_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class Finding:
    start: int
    end: int
    type: str


class Redactor:
    """The rules backend: detectors for the built-in types plus user patterns; `find` and `redact` text."""

    backend = "rules"

    def __init__(self, phone_region: str = "US", patterns: dict[str, str] | None = None):
        import phonenumbers

        region = (phone_region or "").upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise AlignError(
                f"phone region '{phone_region}' is not a region phonenumbers knows; use a two-letter "
                "country code such as US, GB, DE"
            )
        self.phone_region = region
        self.patterns: dict[str, re.Pattern] = {}
        for name, pattern in (patterns or {}).items():
            if not isinstance(name, str) or not _TYPE_NAME.match(name):
                raise AlignError(
                    f"redaction pattern name '{name}' must be upper case letters, digits and _ "
                    "(it becomes the placeholder, e.g. EMPLOYEE_ID -> [EMPLOYEE_ID])"
                )
            try:
                self.patterns[name] = re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise AlignError(
                    f"redaction pattern {name}: '{pattern}' is not a valid regular expression ({exc})"
                ) from None
            if self.patterns[name].search(""):
                raise AlignError(
                    f"redaction pattern {name}: '{pattern}' matches the empty string; it would match everywhere"
                )

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings in text order; where two overlap, the longer one wins."""
        return resolve_overlaps(
            [
                *self._emails(text),
                *self._spelled_emails(text),
                *self._phones(text),
                *self._bare_phones(text),
                *self._ssns(text),
                *self._addresses(text),
                *self._dobs(text),
                *self._cards(text),
                *self._ibans(text),
                *self._ips(text),
                *self._user(text),
            ]
        )

    def redact(self, text: str) -> tuple[str, Counter]:
        """`text` with each finding replaced by `[TYPE]`, and the count per type."""
        findings = self.find(text)
        return replace_findings(text, findings), Counter(f.type for f in findings)

    def describe(self) -> dict[str, Any]:
        """What decides the findings, for manifests: the backend and its packages' versions."""
        return {"backend": self.backend, **detector_versions()}

    # -- detectors ---------------------------------------------------------------------------------

    def _emails(self, text: str) -> Iterator[Finding]:
        for m in _EMAIL.finditer(text):
            yield Finding(m.start(), m.end(), "EMAIL")

    def _spelled_emails(self, text: str) -> Iterator[Finding]:
        for m in _SPELLED_EMAIL.finditer(text):
            spelled_dot = re.search(_DOT_SPELLED, m.group("local") + " " + m.group("domain"), re.I)
            at = m.group("at").strip()
            if at == "@" and not spelled_dot:
                continue  # a plain e-mail: _emails has it
            if (
                at.lower() == "at"
                and not spelled_dot
                and not re.search(r"[._\d]", m.group("local"))
                and (
                    m.group("local").lower() in _NOT_A_MAILBOX
                    or not _EMAIL_WORDS.search(text[max(0, m.start() - 40) : m.start()])
                )
            ):
                continue  # "look at example.com", "his email address at example.com": a word, " at ", a domain
            yield Finding(m.start(), m.end(), "EMAIL")

    def _bare_phones(self, text: str) -> Iterator[Finding]:
        import phonenumbers

        for m in _BARE_PHONE.finditer(text):
            if not _PHONE_WORDS.search(text[max(0, m.start() - 40) : m.start()]):
                continue
            try:
                number = phonenumbers.parse(m.group(), self.phone_region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                yield Finding(m.start(), m.end(), "PHONE")

    def _ssns(self, text: str) -> Iterator[Finding]:
        for m in _SSN.finditer(text):
            if _ssn_issuable(m.group(1), m.group(3), m.group(4)):
                yield Finding(m.start(), m.end(), "SSN")
        for m in _SSN_BARE.finditer(text):
            digits = m.group(1)
            if _ssn_issuable(digits[:3], digits[3:5], digits[5:]):
                yield Finding(m.start(1), m.end(1), "SSN")

    def _addresses(self, text: str) -> Iterator[Finding]:
        for m in _ADDRESS.finditer(text):
            yield Finding(m.start(), m.end(), "ADDRESS")
        for m in _ADDRESS_LOWER.finditer(text):
            yield Finding(m.start(), m.end(), "ADDRESS")

    def _dobs(self, text: str) -> Iterator[Finding]:
        for m in _DOB.finditer(text):
            yield Finding(m.start("date"), m.end("date"), "DOB")

    def _phones(self, text: str) -> Iterator[Finding]:
        import phonenumbers

        leniency = phonenumbers.Leniency.STRICT_GROUPING
        for m in phonenumbers.PhoneNumberMatcher(text, self.phone_region, leniency=leniency):
            raw = m.raw_string
            if not raw.startswith("+"):
                # A bare run of digits is far more often an id, a count or an integer (2147483647) than
                # a phone number; dots next to a one-digit group mean a version (25.1.8937393) or a
                # list item ("7.  123456789"). Both fool the matcher on real data.
                if raw.isdigit() or _DOTTED_SINGLE_DIGIT.search(raw):
                    continue
            yield Finding(m.start, m.end, "PHONE")

    def _cards(self, text: str) -> Iterator[Finding]:
        from stdnum import luhn

        for m in _CARD.finditer(text):
            groups = tuple(len(g) for g in re.split(r"[ -]", m.group()))
            digits = m.group().translate(_NO_SEPARATORS)
            if (
                (len(groups) == 1 or groups in _CARD_GROUPS)
                and 13 <= len(digits) <= 19
                and _CARD_PREFIX.match(digits)
                and luhn.is_valid(digits)
            ):
                yield Finding(m.start(), m.end(), "CARD")

    def _ibans(self, text: str) -> Iterator[Finding]:
        from stdnum import iban

        for m in _IBAN.finditer(text):
            # The pattern runs on into following words in capitals: try shorter ends until one validates.
            candidate = m.group()
            for end in range(len(candidate), 14, -1):
                if candidate[end - 1] == " ":
                    continue
                if iban.is_valid(candidate[:end]):
                    yield Finding(m.start(), m.start() + end, "IBAN")
                    break

    def _ips(self, text: str) -> Iterator[Finding]:
        for m in _IPV4.finditer(text):
            if _is_ip(m.group(), ipaddress.IPv4Address):
                yield Finding(m.start(), m.end(), "IP")
        for m in _IPV6.finditer(text):
            candidate = m.group().rstrip(".")
            if _is_ip(candidate, ipaddress.IPv6Address):
                yield Finding(m.start(), m.start() + len(candidate), "IP")

    def _user(self, text: str) -> Iterator[Finding]:
        for name, pattern in self.patterns.items():
            for m in pattern.finditer(text):
                if m.end() > m.start():
                    yield Finding(m.start(), m.end(), name)


def _ssn_issuable(area: str, group: str, serial: str) -> bool:
    # The SSA never issues area 000, 666 or 900-999, group 00 or serial 0000.
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def resolve_overlaps(found: list[Finding]) -> list[Finding]:
    """Non-overlapping findings in text order; where two overlap, the longer one wins."""
    found = sorted(found, key=lambda f: (f.start, -(f.end - f.start)))
    kept: list[Finding] = []
    for f in found:
        if kept and f.start < kept[-1].end:
            if f.end - f.start > kept[-1].end - kept[-1].start:
                kept[-1] = f
            continue
        kept.append(f)
    return kept


def replace_findings(text: str, findings: list[Finding]) -> str:
    """`text` with each (non-overlapping, ordered) finding replaced by `[TYPE]`."""
    out, pos = [], 0
    for f in findings:
        out.append(text[pos : f.start])
        out.append(f"[{f.type}]")
        pos = f.end
    out.append(text[pos:])
    return "".join(out)


def _is_ip(candidate: str, cls) -> bool:
    try:
        address = cls(candidate)
    except ValueError:
        return False
    # 127.0.0.1, ::1, 0.0.0.0 are the same on every machine and identify nobody; code needs them intact.
    return not (address.is_loopback or address.is_unspecified)


def mask(value: str) -> str:
    """A finding shown without its value: first and last character, the rest as `*`."""
    if len(value) <= 4:
        return "*" * len(value)
    return value[0] + "*" * (len(value) - 2) + value[-1]


# -- records --------------------------------------------------------------------------------------


def redact_value(redactor: Redactor, value: Any, counts: Counter) -> Any:
    """`value` (a string, or lists and dicts of them, e.g. chat messages) with every string redacted.

    Keys are left as they are: they name fields, and a record's structure must survive.
    """
    if isinstance(value, str):
        text, found = redactor.redact(value)
        counts.update(found)
        return text
    if isinstance(value, list):
        return [redact_value(redactor, v, counts) for v in value]
    if isinstance(value, dict):
        return {k: redact_value(redactor, v, counts) for k, v in value.items()}
    return value


def findings_in(redactor: Redactor, value: Any, path: str = "") -> Iterator[tuple[str, str, Finding]]:
    """(field path, the string, finding) for every finding in `value`, for previews."""
    if isinstance(value, str):
        for f in redactor.find(value):
            yield path or "(text)", value, f
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from findings_in(redactor, v, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from findings_in(redactor, v, f"{path}.{k}" if path else str(k))


def detector_versions() -> dict[str, str]:
    """Versions of the packages whose data decides what is found (phone metadata changes often)."""
    from importlib import metadata

    return {name: metadata.version(name) for name in ("phonenumbers", "python-stdnum")}


def check_mode(mode: str, key: str = "redaction") -> None:
    if not isinstance(mode, str) or mode not in MODES:
        raise AlignError(f"'{key}' must be one of {', '.join(MODES)}, got '{mode}'")
