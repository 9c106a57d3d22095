"""The redaction pass on synthetic text: each PII type is found, look-alikes survive."""

from __future__ import annotations

from collections import Counter

import pytest

from align.core.errors import AlignError
from align.privacy.redact import Redactor, mask, redact_value

# (text holding one value of a type, the value, the type)
PII = [
    ("write to jane.doe+news@example.co.uk today", "jane.doe+news@example.co.uk", "EMAIL"),
    ("mail: J_Smith@mail-server.example.org.", "J_Smith@mail-server.example.org", "EMAIL"),
    ("call (415) 555-2671 after six", "(415) 555-2671", "PHONE"),
    ("my cell is 415.555.2671", "415.555.2671", "PHONE"),
    ("dial +1.415.555.2671 now", "+1.415.555.2671", "PHONE"),
    ("or +442079460958 unspaced", "+442079460958", "PHONE"),
    ("reach me on +44 20 7946 0958 in London", "+44 20 7946 0958", "PHONE"),
    ("Büro: +49 30 901820, werktags", "+49 30 901820", "PHONE"),
    ("card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111", "CARD"),
    ("mastercard 5555-5555-5555-4444", "5555-5555-5555-4444", "CARD"),
    ("amex 378282246310005 please", "378282246310005", "CARD"),
    ("IBAN DE89 3704 0044 0532 0130 00 FOR RENT", "DE89 3704 0044 0532 0130 00", "IBAN"),
    ("pay to GB82WEST12345698765432.", "GB82WEST12345698765432", "IBAN"),
    ("server at 192.168.1.20 is down", "192.168.1.20", "IP"),
    ("from 8.8.8.8:53 over udp", "8.8.8.8", "IP"),
    ("v6 2001:db8::8a2e:370:7334 answers", "2001:db8::8a2e:370:7334", "IP"),
    ("mapped ::ffff:192.0.2.1 too", "::ffff:192.0.2.1", "IP"),
    # What regexes can do beyond the first pass (issue 33): SSNs, bare phones after a phone word,
    # e-mails spelled out, US street addresses.
    ("my SSN is 523-45-6789, thanks", "523-45-6789", "SSN"),
    ("social security number 401 23 8842 on file", "401 23 8842", "SSN"),
    ("ssn 287654321 please remove", "287654321", "SSN"),
    ("please text me at 4155552671 today", "4155552671", "PHONE"),
    ("my number is 16175550193.", "16175550193", "PHONE"),
    ("reach me at jane dot doe at example dot com", "jane dot doe at example dot com", "EMAIL"),
    ("mail priya_r [at] example [dot] net now", "priya_r [at] example [dot] net", "EMAIL"),
    ("it is diego (at) example (dot) com", "diego (at) example (dot) com", "EMAIL"),
    ("contact: wei.zhang at example.com", "wei.zhang at example.com", "EMAIL"),
    (
        "ship to 742 Evergreen Terrace, Springfield, IL 62704 asap",
        "742 Evergreen Terrace, Springfield, IL 62704",
        "ADDRESS",
    ),
    (
        "billing: 310 W 58th St, Suite 1200, New York, NY 10019.",
        "310 W 58th St, Suite 1200, New York, NY 10019",
        "ADDRESS",
    ),
    ("send it to PO Box 4471 instead", "PO Box 4471", "ADDRESS"),
    # Lower-case street lines, e-mails with a bare " at " after an e-mail word, dates of birth.
    ("deliver to 58 willow crescent, the blue door", "58 willow crescent", "ADDRESS"),
    ("moved to 907 north pine avenue apt 4 last month", "907 north pine avenue apt 4", "ADDRESS"),
    ("pick up from 33 rosemary ln. tomorrow", "33 rosemary ln.", "ADDRESS"),
    ("my email is kpatel at example.net, use that", "kpatel at example.net", "EMAIL"),
    ("e-mail me: lindqvist at example.co.uk", "lindqvist at example.co.uk", "EMAIL"),
    ("my date of birth is 22/07/1979 if needed", "22/07/1979", "DOB"),
    ("I was born on March 3, 1991 in a taxi", "March 3, 1991", "DOB"),
    ("DOB: 1985-11-02", "1985-11-02", "DOB"),
    ("born 9 August 1968, postcode unknown", "9 August 1968", "DOB"),
    ("my birthday is 4th of July 1990.", "4th of July 1990", "DOB"),
    ("d.o.b. 3/4/88 on the form", "3/4/88", "DOB"),
]

LOOK_ALIKES = [
    "upgrade to version 2.13.0 or 10.4.1",
    "due on 2026-12-01, or 12/01/2026",
    "your order #A-1029384 has shipped",
    "ISBN 978-3-16-148410-0 and 9780306406157",
    "logged at 2026-12-01T10:30:00Z (10:30:00 local)",
    "it costs $1,299.99 or 1.299,00 EUR",
    "unix time 1764583200, build 20261201103000",
    "not a card: 4111 1111 1111 1112 (bad check digit)",
    "tracking 9123456789012348 (Luhn-valid, no card network starts with 9)",
    "account 4000 0000 0000 000 2 (grouped as no card is printed)",
    "not an IBAN: DE89 3704 0044 0532 0130 01",
    "not an address: 999.1.1.1 or 1:2:3",
    "a@b is no e-mail, nor is user@localhost",
    "bind to 127.0.0.1:8080, ::1 or 0.0.0.0",
    # Found in the shared data (Arena-Hard, HH-RLHF): a versioned path and a numbered list.
    "C:/Users/x/AppData/Local/Android/Sdk/ndk/25.1.8937393/build/core",
    "6.  12345\n7.  123456789\n8.  1234567",
    # Found in the shared data (Stack Exchange politeness): a long decimal, ids and integers.
    "score -0.68312777640528421 and 0.25362758080312087",
    "id 3109434, INT_MAX is 2147483647, input = 22936722 49.",
    # Not issued as SSNs: area 000, 666 or 9xx, group 00, serial 0000; 9 bare digits with no "SSN".
    "ref 666-12-3456, 912-34-5678, 123-00-4567, 123-45-0000",
    "batch 523456789 done",
    # Bare 10 digits with no phone word before them are ids, not phones.
    "order 4155552671 shipped; case #6175550193 closed",
    # " at " between a word and a domain, and numbers with "dot".
    "look at example.com for help; meet me at 5 dot 30",
    # Lower-case words after a number are not a street; neither is a capitalised word without a suffix.
    "2 days in a row, 3 Big Macs, 10 Downing",
    # ... nor are function words or units before a street word.
    "we walked 3 blocks down the road; a 2 hour drive; 1 more way; 2 lane road works",
    # " at " after an e-mail word where the word before " at " is no mailbox; dates that are not births.
    "his official email address at example.com; write us at example.org",
    "ordered on 03/14/2024, shipped March 20, 2024; the firm was born out of a 1998 merger",
]


@pytest.mark.parametrize("text,value,kind", PII, ids=[f"{k}-{i}" for i, (_, _, k) in enumerate(PII)])
def test_each_type_is_replaced_by_its_placeholder(text, value, kind):
    out, counts = Redactor().redact(text)
    assert value not in out
    assert out == text.replace(value, f"[{kind}]")
    assert counts == Counter({kind: 1})


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_look_alikes_survive(text):
    out, counts = Redactor().redact(text)
    assert out == text and not counts


def test_several_types_in_one_text_are_all_counted():
    text = "jane@example.com / (415) 555-2671 / 4111111111111111 / 10.0.0.1 / jane@example.com"
    out, counts = Redactor().redact(text)
    assert out == "[EMAIL] / [PHONE] / [CARD] / [IP] / [EMAIL]"
    assert counts == Counter({"EMAIL": 2, "PHONE": 1, "CARD": 1, "IP": 1})


def test_phone_region_decides_national_numbers():
    text = "ruf an: 030 901820"
    assert Redactor("US").redact(text)[0] == text
    assert Redactor("DE").redact(text)[0] == "ruf an: [PHONE]"


def test_user_patterns_get_their_own_placeholder():
    r = Redactor(patterns={"EMPLOYEE_ID": r"\bEMP-\d{6}\b"})
    out, counts = r.redact("badge EMP-123456, not EMP-12")
    assert out == "badge [EMPLOYEE_ID], not EMP-12" and counts == Counter({"EMPLOYEE_ID": 1})


@pytest.mark.parametrize(
    "patterns,message",
    [
        ({"employee": r"x"}, "upper case"),
        ({"ID": r"(unclosed"}, "not a valid regular expression"),
        ({"ID": r"x*"}, "matches the empty string"),
    ],
)
def test_bad_user_patterns_are_errors(patterns, message):
    with pytest.raises(AlignError, match=message):
        Redactor(patterns=patterns)


def test_unknown_region_is_an_error():
    with pytest.raises(AlignError, match="region 'XX'"):
        Redactor("XX")


def test_nested_records_keep_their_shape():
    record = {
        "messages": [{"role": "user", "content": "I am jane@example.com"}, {"role": "assistant", "content": "Hi"}],
        "score": 1.5,
        "email": None,
    }
    counts = Counter()
    out = redact_value(Redactor(), record, counts)
    assert out == {
        "messages": [{"role": "user", "content": "I am [EMAIL]"}, {"role": "assistant", "content": "Hi"}],
        "score": 1.5,
        "email": None,
    }
    assert counts == Counter({"EMAIL": 1})


def test_mask_hides_all_but_the_ends():
    assert mask("jane@example.com") == "j**************m"
    assert mask("1234") == "****"
