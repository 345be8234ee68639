"""Wikitext -> clean text with exact link spans: each construct, malformed markup, and speed bounds."""

from __future__ import annotations

import gc
import random
import time

import pytest

from preprocessing.wikitext import Link, clean_wikitext


def spans(wikitext: str) -> tuple[str, list[tuple[int, int, str, str]]]:
    """The clean text and (start, end, target, anchor) of each link, after checking the invariants."""
    text, links = clean_wikitext(wikitext)
    for link in links:
        assert isinstance(link, Link)
        anchor = text[link.start : link.end]
        assert anchor and anchor == anchor.strip(), link
    assert [link.start for link in links] == sorted(link.start for link in links)
    return text, [(ln.start, ln.end, ln.target, text[ln.start : ln.end]) for ln in links]


def test_nested_templates_go_whole() -> None:
    assert spans("Before {{a|{{b|{{c|x}} y}} z}} after.") == ("Before after.", [])
    assert spans("A {{{1|{{{2}}}}}} {{#if:{{{x|}}}|yes|no}} B") == ("A B", [])


def test_table_inside_a_template() -> None:
    wikitext = "{{Infobox\n| t = {| class=x\n| a || [[B]]\n|}\n| u = v\n}}\nText [[Link]]."
    assert spans(wikitext) == ("Text Link.", [(5, 9, "Link", "Link")])


def test_template_inside_a_table_cell() -> None:
    wikitext = (
        'Intro.\n{| class="wikitable"\n|-\n! Country !! Capital\n|-\n'
        "| {{flag|France}} || [[Paris]]\n|}\nOutro [[Rome]]."
    )
    assert spans(wikitext) == ("Intro.\nOutro Rome.", [(13, 17, "Rome", "Rome")])


def test_nested_tables() -> None:
    wikitext = "A\n{|\n| outer\n{|\n| inner [[X]]\n|}\n| still outer\n|}\nB [[Y]]"
    assert spans(wikitext) == ("A\nB Y", [(4, 5, "Y", "Y")])


def test_ref_with_a_cite_template_and_a_link() -> None:
    wikitext = "Paris is big.<ref>{{cite web|title=[[X]]|url=http://x.org}} See [[Y]].</ref> It is [[old]]."
    assert spans(wikitext) == ("Paris is big. It is old.", [(20, 23, "Old", "old")])


def test_self_closing_refs_and_the_space_they_leave() -> None:
    wikitext = (
        'A [[river]]<ref name=x/> flows<ref name="a b" /> and the river <ref>x</ref> bends <ref>y</ref>.'
    )
    assert spans(wikitext) == ("A river flows and the river bends.", [(2, 7, "River", "river")])


def test_file_with_links_in_its_caption() -> None:
    wikitext = (
        "[[File:X.jpg|thumb|upright=1.2|a [[nested link]] and [[Other|another]] caption]] "
        "The [[city]] is here. [[Image:Y.png]]"
    )
    assert spans(wikitext) == ("The city is here.", [(4, 8, "City", "city")])


def test_file_caption_spanning_lines() -> None:
    wikitext = "[[File:X.jpg|thumb|\n{{Navbox\n|a=b}}\n[[Y]] caption\n]]\nText [[Z]]."
    assert spans(wikitext) == ("Text Z.", [(5, 6, "Z", "Z")])


def test_math_and_other_opaque_tags() -> None:
    wikitext = (
        "Euler found <math>e^{i\\pi}+1=0</math> for [[Complex number|complex numbers]]."
        "<gallery>\nFile:A.jpg|[[B]]\n</gallery> <chem>H2O</chem><score>{c}</score>"
        "<syntaxhighlight lang=python>x = {}</syntaxhighlight> <timeline>x</timeline> End."
    )
    text = "Euler found for complex numbers. End."
    assert spans(wikitext) == (text, [(16, 31, "Complex number", "complex numbers")])


def test_comments() -> None:
    assert spans("A <!-- comment with [[link]] --> [[B]] C<!-- unterminated [[D]]") == (
        "A B C",
        [(2, 3, "B", "B")],
    )


def test_entities_decode_after_markup() -> None:
    wikitext = (
        "[[Rock and roll|Rock&nbsp;&amp;&nbsp;roll]] &ndash; &#91;1&#93; "
        "&lt;ref&gt;not a tag&lt;/ref&gt; caf&eacute;&#160;x"
    )
    text = "Rock & roll – [1] <ref>not a tag</ref> café x"
    assert spans(wikitext) == (text, [(0, 11, "Rock and roll", "Rock & roll")])
    assert "\xa0" not in text


def test_interwiki_category_and_language_links() -> None:
    wikitext = (
        "Text.[[de:Text]][[Category:Foo|Sort]] A [[wikt:word|word]], "
        "[[:Category:Foo|the category]] and [[:de:Text]]."
    )
    assert spans(wikitext) == ("Text. A word, the category and de:Text.", [])


def test_links_to_other_namespaces_keep_their_text_only() -> None:
    wikitext = "[[Wikipedia:Manual of Style|style guide]] and [[Help:Foo (bar)|]] and [[Special:Random]]."
    assert spans(wikitext) == ("style guide and Foo and Special:Random.", [])


def test_headings_dropped_lists_and_paragraphs_kept() -> None:
    wikitext = (
        "Intro [[A]].\n\n\n== Heading [[H]] ==\nPara one.\n\n* item [[one]]\n** item two\n"
        "# num\n: indent\n; term : def\n----\n   Last.  \n\n"
    )
    text = "Intro A.\nPara one.\nitem one\nitem two\nnum\nindent\nterm : def\nLast."
    assert spans(wikitext) == (text, [(6, 7, "A", "A"), (24, 27, "One", "one")])


def test_bold_and_italic() -> None:
    wikitext = "'''Bold''' and ''italic'' and '''''both''''' in [[Foo|''Foo'']]s, ''''four''''."
    assert spans(wikitext) == ("Bold and italic and both in Foos, 'four'.", [(28, 32, "Foo", "Foos")])


def test_internal_links() -> None:
    wikitext = (
        "[[Target]], [[target|label]], [[Target]]s, [[Target#Section|sec]], [[foo_bar]]ing, "
        "[[Paris (band)|]], [[Boston, Massachusetts|]], [[#History]], [[:Foo]], [[Foo|bar]]<nowiki/>s."
    )
    text = "Target, label, Targets, sec, foo_baring, Paris, Boston, #History, Foo, bars."
    assert clean_wikitext(wikitext) == (
        text,
        [
            Link(0, 6, "Target"),
            Link(8, 13, "Target"),  # piped
            Link(15, 22, "Target"),  # the link trail joins the anchor
            Link(24, 27, "Target"),  # the fragment goes from the target
            Link(29, 39, "Foo bar"),  # shown as typed, normalized as a title
            Link(41, 46, "Paris (band)"),  # pipe trick
            Link(48, 54, "Boston, Massachusetts"),
            Link(66, 69, "Foo"),  # leading colon; a pure fragment link above is text only
            Link(71, 74, "Foo"),  # <nowiki/> stops the trail
        ],
    )


def test_anchor_whitespace_stays_outside_the_span() -> None:
    wikitext = "[[Foo|&nbsp;bar]] x [[Baz|  qux  ]] y [[Empty|{{tpl}}]] [[Blank| ]]."
    assert spans(wikitext) == (
        "bar x qux y Empty.",
        [(0, 3, "Foo", "bar"), (6, 9, "Baz", "qux"), (12, 17, "Empty", "Empty")],
    )


def test_unicode_offsets_are_str_indices() -> None:
    assert spans("[[Ω]] and [[😀|emoji]] and [[éclair]]s.") == (
        "Ω and emoji and éclairs.",
        [(0, 1, "Ω", "Ω"), (6, 11, "😀", "emoji"), (16, 23, "Éclair", "éclairs")],
    )


def test_external_links() -> None:
    wikitext = "See [http://x.org label], [http://y.org] and [https://z.org ''styled''] or http://bare.org."
    assert spans(wikitext) == ("See label, and styled or http://bare.org.", [])


def test_nowiki_keeps_its_content_literally() -> None:
    wikitext = (
        "<nowiki>[[not a link]] {{no}} ''x'' &amp;</nowiki> and <pre>* kept</pre> [[A]].\n"
        "<nowiki>#</nowiki>1 <nowiki>;x</nowiki>"
    )
    text = "[[not a link]] {{no}} ''x'' & and * kept A.\n#1 ;x"
    assert spans(wikitext) == (text, [(41, 42, "A", "A")])


def test_html_tags_go_and_their_text_stays() -> None:
    wikitext = '<span style="x">a</span><br />b <small>c</small> x<sup>2</sup> <Paris> <div>[[D]]</div>'
    assert spans(wikitext) == ("a b c x2 <Paris> D", [(17, 18, "D", "D")])


def test_magic_words_and_empty_parentheses() -> None:
    assert spans("__NOTOC__\nText __TOC__ here.") == ("Text here.", [])
    wikitext = (
        "'''Paris''' ({{IPAc-en|p|æ|r|ɪ|s}}, {{IPA|pa}}) is the capital. "
        "'''Rome''' ({{respell|ROHM}}; born [[Italy]]) too."
    )
    assert spans(wikitext) == ("Paris is the capital. Rome (born Italy) too.", [(33, 38, "Italy", "Italy")])


def test_debris_lines_go() -> None:
    wikitext = "Text [[A]].\n{{cite web|url=x}}.\n:<math>x</math>,\n{{Navbox}}\nB [[C]]\n[[.]]"
    assert spans(wikitext) == ("Text A.\nB C\n.", [(5, 6, "A", "A"), (10, 11, "C", "C"), (12, 13, ".", ".")])


@pytest.mark.parametrize(
    ("wikitext", "expected"),
    [
        # an unclosed '{{' drops the rest of its line
        ("Text {{cite web|url=x [[A]]\nNext [[B]].", ("Text\nNext B.", [(10, 11, "B", "B")])),
        # an unclosed or nested '[[' loses its target; its label stays as text
        ("A [[B|c d\nE [[F\nG [[H|i [[J]] k]] l ]] m", ("A c d\nE F\nG i J k l m", [(14, 15, "J", "J")])),
        # an unclosed table runs to the end of the page
        ("Top [[A]].\n{|\n| x [[B]]\nRest.", ("Top A.", [(4, 5, "A", "A")])),
        # stray closers are debris
        ("One }} two ]] three [[A]].", ("One two three A.", [(14, 15, "A", "A")])),
        # an unclosed extension tag goes alone, its content stays
        ("A<ref>note [[B]]\nC", ("Anote B\nC", [(6, 7, "B", "B")])),
        # an unclosed image drops the rest of its paragraph
        ("X [[File:a.jpg|thumb|caption [[B]] more\nstill\n\nNext [[C]].", ("X\nNext C.", [(7, 8, "C", "C")])),
        ("", ("", [])),
        ("{{", ("", [])),
        ("[[", ("", [])),
        ("<ref>", ("", [])),
        ("{|", ("", [])),
    ],
)
def test_unbalanced_markup_degrades_locally(wikitext: str, expected: tuple) -> None:
    assert spans(wikitext) == expected


def test_sentinel_characters_in_the_input_are_dropped() -> None:
    assert spans("a\ue000b\ue001c\ue002 [[D]]") == ("abc D", [(4, 5, "D", "D")])


REALISTIC_PAGE = """{{Short description|Capital of France}}
{{Use dmy dates|date=March 2024}}
{{Infobox settlement
| name = Paris
| image_skyline = {{multiple image|image1=A.jpg|caption1=[[Eiffel Tower]]}}
| coordinates = {{coord|48|51|24|N|2|21|08|E|display=inline,title}}
| population_total = {{formatnum:2102650}}<ref name="pop">{{cite web|url=http://insee.fr|title=Populations}}</ref>
| blank_info = {| class="wikitable"
| a || b
|}
}}
'''Paris''' ({{IPAc-en|ˈ|p|æ|r|ɪ|s}}; {{IPA-fr|paʁi|lang}}) is the [[capital city|capital]] and most \
populous city of [[France]].<ref>{{cite book|last=Smith|title=''Paris''|publisher=[[Penguin Books]]}}</ref> \
With an estimated population of 2,102,650 residents in January 2023<ref name="pop" /> in an area of more \
than {{convert|105|km2|mi2}}, Paris is the fourth-most populous city in the [[European Union]] and the \
30th most densely populated city in the world in 2022.<ref>{{Cite web|url=http://x.org|title=Density}}</ref>

[[File:Paris Night.jpg|thumb|upright=1.2|The [[Seine]] at night, seen from the [[Pont Neuf|Pont&nbsp;Neuf]]]]
Since the 17th century, Paris has been one of the world's major centres of [[finance]], [[diplomacy]], \
[[commerce]], [[culture]], [[Fashion capital|fashion]], and [[gastronomy]].<!-- hidden [[Note]] -->

== History ==
=== Origins ===
The [[Parisii (Gaul)|Parisii]], a sub-tribe of the [[Celts|Celtic]] [[Senones]], inhabited the Paris area \
from around the middle of the 3rd century BC.{{sfn|Lawrence|Gondrand|2010|p=25}} One of the area's major \
north&ndash;south trade routes crossed the [[Seine]] on the [[Île de la Cité|île de la Cité]].

{| class="wikitable sortable"
|+ Population
! Year !! Population
|-
| 1801 || {{formatnum:546856}}
|-
| 2023 || [[Demographics of Paris|2,102,650]]
|}

Notable landmarks include:
* the [[Louvre]], the world's most-visited [[art museum]];
* the '''[[Eiffel Tower]]''', built for the [[Exposition Universelle (1889)|1889 World's Fair]];
* [[Notre-Dame de Paris|Notre-Dame]]s gothic towers<ref>Author, ''Title'', p. 3.</ref> and <math>x^2</math> \
its [[Flying buttress|buttress]]es.

=== Modern era ===
During the [[Paris Commune]] of 1871, see [http://commune.org the archives] or [[wikt:commune|commune]] \
(a [[de:Pariser Kommune]]-style interwiki link is hidden). <nowiki>[[not a link]]</nowiki>

== See also ==
{{Portal|France}}
* [[:Category:Paris|Paris category]]
* [[Outline of Paris]]

== References ==
{{Reflist|30em}}

{{Navbox|name=Paris|list1=[[Arrondissements of Paris|Arrondissements]] {{!}} [[Banlieue]]}}
{{Authority control}}
[[Category:Paris| ]]
[[Category:Capitals in Europe]]
[[fr:Paris]]
__NOTOC__
"""

REALISTIC_ANCHORS = [
    ("capital", "Capital city"),
    ("France", "France"),
    ("European Union", "European Union"),
    ("finance", "Finance"),
    ("diplomacy", "Diplomacy"),
    ("commerce", "Commerce"),
    ("culture", "Culture"),
    ("fashion", "Fashion capital"),
    ("gastronomy", "Gastronomy"),
    ("Parisii", "Parisii (Gaul)"),
    ("Celtic", "Celts"),
    ("Senones", "Senones"),
    ("Seine", "Seine"),
    ("île de la Cité", "Île de la Cité"),
    ("Louvre", "Louvre"),
    ("art museum", "Art museum"),
    ("Eiffel Tower", "Eiffel Tower"),
    ("1889 World's Fair", "Exposition Universelle (1889)"),
    ("Notre-Dames", "Notre-Dame de Paris"),
    ("buttresses", "Flying buttress"),
    ("Paris Commune", "Paris Commune"),
    ("Outline of Paris", "Outline of Paris"),
]


def test_realistic_page() -> None:
    text, links = clean_wikitext(REALISTIC_PAGE)
    assert [(text[ln.start : ln.end], ln.target) for ln in links] == REALISTIC_ANCHORS
    assert text.splitlines()[0] == (
        "Paris is the capital and most populous city of France. With an estimated population of "
        "2,102,650 residents in January 2023 in an area of more than 105 square kilometres, Paris is the "
        "fourth-most populous city in the European Union and the 30th most densely populated city in the "
        "world in 2022."
    )
    assert text.splitlines()[-4:] == [
        "Notre-Dames gothic towers and its buttresses.",
        "During the Paris Commune of 1871, see the archives or commune (a -style interwiki link is "
        "hidden). [[not a link]]",
        "Paris category",
        "Outline of Paris",
    ]
    for debris in ("{{", "}}", "[[File", "<ref", "'''", "==", "&nbsp;", "|", "\n\n", "  ", "Category:"):
        assert debris not in text.replace("[[not a link]]", ""), debris


PATHOLOGICAL_UNITS = [
    "{{", "{{ ", "}}", "{{{", "[[", "[[a|", "[[File:a|", "[[File:a|[[", "]]", "[[a]]", "[[a|b", "[[:",
    "<ref>", "<ref ", "</ref>", "<!--", "<nowiki>", "<", "<a", "<span>", "{|\n", "\n|}", "\n{|", "|}}",
    "'", "[http://a ", "=", "\n=", "&", "&#", "(, ", "\n* ", "[[File:a|b\n",
]  # fmt: skip


@pytest.mark.parametrize("unit", PATHOLOGICAL_UNITS)
def test_pathological_markup_of_1mb_is_cleaned(unit: str) -> None:
    text, links = spans(unit * (1_000_000 // len(unit)))
    assert isinstance(text, str) and all(0 <= s < e <= len(text) for s, e, _, _ in links)


# the slowest units of the list above (nesting that an unbalanced scan could make quadratic)
@pytest.mark.parametrize("unit", ["{{ ", "|}}", "[[a]]", "[[File:a|[[", "<ref>", "{|\n"])
def test_linear_time_on_pathological_markup(unit: str) -> None:
    """4x the input must cost about 4x the time, not 16x: a ratio measured in the same process
    (best of 3 each), so a slow or busy machine does not decide the outcome. The garbage collector
    is paused while timing: in a long test session its full passes scan every object the earlier
    tests left, which would bill the larger input for the session's heap, not for the algorithm."""

    def cpu_seconds(size: int) -> float:
        wikitext = unit * (size // len(unit))
        best = float("inf")
        for _ in range(3):
            gc.collect()
            gc.disable()
            try:
                start = time.process_time()
                spans(wikitext)
                best = min(best, time.process_time() - start)
            finally:
                gc.enable()
        return max(best, 1e-3)

    # 400k and 100k characters: quadratic work makes the ratio 16, linear 4; each size is ~0.1 s or more
    assert cpu_seconds(400_000) / cpu_seconds(100_000) < 10


def test_never_raises_on_random_markup_soup() -> None:
    rng = random.Random(1234)
    alphabet = [*PATHOLOGICAL_UNITS, "a", "b c", " ", "\n", "\n\n", "|", "}", "{", "]", "[", "&nbsp;", "x]]s"]
    for _ in range(300):
        spans("".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 200))))
    wikitext = "".join(rng.choice(alphabet) for _ in range(250_000))
    start = time.process_time()
    spans(wikitext)
    assert time.process_time() - start < 1.0
