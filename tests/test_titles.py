"""MediaWiki title normalization and namespace / interwiki detection."""

from __future__ import annotations

import pytest

from preprocessing.titles import decode_entities, link_namespace, normalize_title


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Paris", "Paris"),
        ("foo_bar", "Foo bar"),  # underscores are spaces; first letter upper-cased
        ("  Foo   bar\t", "Foo bar"),  # whitespace runs collapse, ends are stripped
        ("Foo__bar _baz", "Foo bar baz"),
        ("éclair", "Éclair"),  # a non-ASCII first letter
        ("ßeta", "ßeta"),  # 'ß'.upper() is two letters: MediaWiki keeps it
        ("iPod", "IPod"),  # only the first letter changes
        ("Paris#History", "Paris"),  # the fragment goes
        ("paris #History", "Paris"),
        ("#History", None),  # a pure fragment names no page
        (":Paris", "Paris"),  # the leading colon of the main namespace
        (": Paris", "Paris"),
        ("AT&amp;T", "AT&T"),  # character references
        ("Foo&nbsp;bar", "Foo bar"),
        ("Foo&#95;bar", "Foo bar"),  # a reference to '_' is a space too
        ("&#91;x&#93;", None),  # decodes to '[x]': brackets are illegal in titles
        ("Foo%20bar", "Foo bar"),  # percent-decoding
        ("Caf%C3%A9", "Café"),
        ("100% pure", "100% pure"),  # a lone '%' stays
        ("Foo%23bar", "Foo"),  # a percent-encoded '#' starts a fragment
        ("Foo\u200e", "Foo"),  # direction marks go
        ("Foo\xa0bar", "Foo bar"),  # so do unusual spaces
        ("", None),
        ("   ", None),
        ("_", None),
        ("Foo|bar", None),  # illegal characters
        ("Foo{bar}", None),
        ("x" * 256, None),  # over 255 bytes
        ("é" * 128, None),  # 256 bytes of UTF-8
        ("x" * 255, "X" + "x" * 254),
        ("Foo: bar", "Foo: bar"),  # no namespace: the colon is part of the title
    ],
)
def test_normalize_title(raw: str, expected: str | None) -> None:
    assert normalize_title(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("category:foo_bar", "Category:Foo bar"),  # the namespace gets its canonical case
        ("Category : foo", "Category:Foo"),  # spaces around the colon go
        (":Category:Foo", "Category:Foo"),
        ("Image:x.jpg", "File:X.jpg"),  # aliases become the canonical namespace
        ("WP:NPOV", "Wikipedia:NPOV"),
        ("wikipedia talk:foo", "Wikipedia talk:Foo"),
        ("Category:", None),  # a namespace with no title
        ("de:Paris", "de:Paris"),  # interlanguage: prefix lower-cased, the rest left to that wiki
        ("DE:paris", "de:paris"),
        ("wikt:word", "wikt:word"),
        ("Wiktionary:word", "wiktionary:word"),
    ],
)
def test_normalize_title_namespaces(raw: str, expected: str | None) -> None:
    assert normalize_title(raw) == expected


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Paris", None),
        ("Foo: bar", None),  # an unknown prefix is part of an article title
        ("Star Wars: Episode I", None),
        ("Category:Foo", "Category"),
        ("category:foo", "Category"),
        (":Category:Foo", "Category"),  # the leading colon does not change the namespace
        ("File:X.jpg", "File"),
        ("Image:X.jpg", "Image"),  # an alias comes back as written, in its canonical case
        ("image_talk:X", "Image talk"),
        ("Template:Infobox", "Template"),
        ("Wikipedia:NPOV", "Wikipedia"),
        ("User talk:X", "User talk"),
        ("Help:Contents", "Help"),
        ("Portal:Art", "Portal"),
        ("Draft:X", "Draft"),
        ("Module:Citation", "Module"),
        ("Special:Random", "Special"),
        ("Media:X.ogg", "Media"),
        ("de:Paris", "de"),  # language prefixes
        ("FR:Paris", "fr"),
        ("zh-min-nan:X", "zh-min-nan"),
        ("simple:Paris", "simple"),
        ("wikt:word", "wikt"),  # interwiki prefixes
        ("Wiktionary:word", "wiktionary"),
        ("commons:File:X.jpg", "commons"),
    ],
)
def test_link_namespace(title: str, expected: str | None) -> None:
    assert link_namespace(title) == expected


def test_decode_entities() -> None:
    assert decode_entities("a&nbsp;b &amp; c &ndash; d &#91;e&#x5D;") == "a b & c – d [e]"
    assert decode_entities("&#160;") == " "  # a numeric no-break space is a plain space too
    # MediaWiki needs the ';': without it, and for unknown names or invalid code points, the text stays.
    assert decode_entities("AT&T &amp &bogus; &#0; &#xD800; &#1114112;") == (
        "AT&T &amp &bogus; &#0; &#xD800; &#1114112;"
    )
    assert decode_entities("&#xE000;") == ""  # code points wikitext.py reserves for itself
