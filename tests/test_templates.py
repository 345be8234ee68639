"""Content-bearing templates in clean text: every table entry on its real call, conversions, nesting,
links inside rendered templates, pronunciation dropped with its punctuation, repairs counted."""

from __future__ import annotations

from collections import Counter

import pytest

from preprocessing import quality, templates
from preprocessing.templates import RenderOptions
from preprocessing.wikitext import clean_wikitext

ENTRIES = [*templates.TEMPLATES, templates.LANG_PREFIX]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.names[0])
def test_each_table_entry_renders_its_real_call(entry: templates.Template) -> None:
    call, expected = entry.example
    # in a sentence, as the calls stand in the excerpt: the rendering must read as part of it
    text, links = clean_wikitext(f"Before {call} after.")
    assert text == " ".join(f"Before {expected} after.".split()), call
    assert links == []


def test_the_table_names_are_unique_and_normalized() -> None:
    names = [name for entry in templates.TEMPLATES for name in entry.names]
    assert len(names) == len(set(names))
    assert all(name == " ".join(name.lower().split()) for name in names)


@pytest.mark.parametrize(
    ("wikitext", "expected"),
    [
        ("{{convert|2381741|km2|sqmi|0}}", "2,381,741 square kilometres (919,595 sq mi)"),
        ("{{convert|1300|mi|km}}", "1,300 miles (2,100 km)"),
        ("{{convert|24|°C|0|abbr=on}}", "24 °C (75 °F)"),
        ("{{convert|400|to|670|mm|1|abbr=on}}", "400 to 670 mm (15.7 to 26.4 in)"),
        ("{{convert|5|C-change|0|abbr=on}}", "5 °C (9 °F)"),
        ("{{convert|-60|°F}}", "−60 degrees Fahrenheit (−51 °C)"),
        ("{{convert|490|oilbbl|0|disp=table}}", "490 barrels (78 m3)"),
    ],
)
def test_convert_shows_the_conversion_when_asked(wikitext: str, expected: str) -> None:
    assert clean_wikitext(wikitext, RenderOptions(convert_output=True))[0] == expected
    # by default the value and unit alone, as the text reads without the parenthesis
    assert clean_wikitext(wikitext)[0] == expected.split(" (")[0]


def test_unknown_units_and_odd_values_are_shown_as_typed() -> None:
    assert clean_wikitext("{{convert|12|furlongs|abbr=on}}")[0] == "12 furlongs"
    assert clean_wikitext("{{convert|1|km}} and {{convert|1|km|adj=on}} road")[0] == (
        "1 kilometre and 1-kilometre road"
    )
    assert clean_wikitext("{{convert|100|km|mi|sp=us}}")[0] == "100 kilometers"


def test_links_inside_rendered_templates_are_exact_spans() -> None:
    wikitext = (
        "A {{Nihongo|[[bayonet]]|銃剣|jūken}} and {{nowrap|[[Pope Clement IV]]}}; "
        "[[Edge of space|altitude of {{convert|100|km|mi|sp=us}}]] and "
        "[[29th parallel north|{{nowrap|29° N}}]]."
    )
    text, links = clean_wikitext(wikitext)
    assert text == (
        "A bayonet (銃剣, jūken) and Pope Clement IV; altitude of 100 kilometers and 29° N."
    )
    assert [(text[s:e], t) for s, e, t in links] == [
        ("bayonet", "Bayonet"),
        ("Pope Clement IV", "Pope Clement IV"),
        ("altitude of 100 kilometers", "Edge of space"),
        ("29° N", "29th parallel north"),
    ]
    assert quality.link_errors(text, links) == []


def test_nested_content_templates_render_inside_out() -> None:
    assert clean_wikitext("{{lang-ar|{{large|الجزائر}}}}")[0] == "الجزائر"
    assert clean_wikitext("{{lang|grc|{{linktext|ἄνθρωπος}}}}")[0] == "ἄνθρωπος"
    # a template the table does not know, inside one it knows, goes alone
    assert clean_wikitext("{{small|(1957{{efn|x}}–70)}}")[0] == "(1957–70)"


def test_templates_in_dropped_places_stay_dropped() -> None:
    wikitext = (
        "Text.<ref>{{lang|fr|cité}}</ref>\n{|\n| {{convert|5|km}}\n|}\n"
        "{{Infobox|area={{convert|5|km2}}}}\n[[File:X.jpg|thumb|{{lang|fr|légende}}]]\nEnd."
    )
    assert clean_wikitext(wikitext)[0] == "Text.\nEnd."


def test_real_leads_read_whole() -> None:
    algeria = (
        "'''Algeria''' ({{lang-ar|{{large|الجزائر}}}} ''{{transl|ar|al-Jazā'ir}}''; {{lang-ber|ⵍⵣⵣⴰⵢⴻⵔ}} "
        "''Dzayer''), officially '''People's Democratic Republic of Algeria'''. With an area of "
        "{{convert|2381741|km2|sqmi|0}}, Algeria is the tenth-largest country in the world."
    )
    assert clean_wikitext(algeria)[0] == (
        "Algeria (الجزائر al-Jazā'ir; ⵍⵣⵣⴰⵢⴻⵔ Dzayer), officially People's Democratic Republic of "
        "Algeria. With an area of 2,381,741 square kilometres, Algeria is the tenth-largest country in "
        "the world."
    )
    lincoln = (
        "'''Abraham Lincoln''' "
        "({{IPAc-en|audio=GeoTrinity_Abraham_Lincoln.ogg|ˈ|eɪ|b|r|ə|h|æ|m|_|ˈ|l|I|ŋ|k|ən}};"
        " February 12, 1809 – April 15, 1865) was"
    )
    assert clean_wikitext(lincoln)[0] == "Abraham Lincoln (February 12, 1809 – April 15, 1865) was"


@pytest.mark.parametrize(
    ("wikitext", "expected"),
    [
        # pronunciation alone in its parentheses: the parentheses go
        ("'''Alabama''' ({{IPAc-en|audio=en-us-Alabama.ogg|ˌ|æ|l|ə|ˈ|b|æ|m|ə}}) is a state.",
         "Alabama is a state."),
        # before the rest of the parenthesis: the separator goes
        ("'''Aruba''' ({{IPAc-en|ə|ˈ|r|uː|b|ə}} {{respell|ə|ROO|bə}}; {{IPA-nl|aːˈrubaː|lang}}) is",
         "Aruba is"),
        ("'''Phoebus''' ({{IPAc-en|ˈ|f|iː|b|ə|s}} {{respell|FEE|bəs}}; {{lang|grc|Φοῖβος}}, ''Phoibos'')",
         "Phoebus (Φοῖβος, Phoibos)"),
        # after it: the trailing separator goes
        ("'''Achilles''' ({{lang-grc|Ἀχιλλεύς}}, ''Akhilleus'', {{IPA-el|akʰilːéu̯s|pron}}) was",
         "Achilles (Ἀχιλλεύς, Akhilleus) was"),
        ("'''Articenens''' ({{IPAc-en|ɑr|ˈ|t|ɪ|s|ɨ|n|ə|n|z}} {{respell|ar|TISS|i-nənz}}; \"bow-carrying\").",
         'Articenens ("bow-carrying").'),
        # between others: one separator stays
        ("'''Asphalt''' ({{IPAc-en|US|ˈ|æ|s|f|ɔː|l|t}}, {{IPAc-en|UK|ˈ|æ|s|f|æ|l|t}}, also bitumen)",
         "Asphalt (also bitumen)"),
        ("Angola {{IPAc-en|æ|ŋ|ˈ|ɡ|oʊ|l|ə}}, officially", "Angola, officially"),
        # italics around a dropped template leave no apostrophe
        ("* ''{{FRO}}'' (DEN)", "(DEN)"),
    ],
)  # fmt: skip
def test_pronunciation_goes_with_its_punctuation(wikitext: str, expected: str) -> None:
    text = clean_wikitext(wikitext)[0]
    assert text == expected
    assert quality.broken_punctuation(text) == []


def test_the_cleaner_counts_renderings_and_repairs() -> None:
    stats: Counter = Counter()
    wikitext = "'''X''' ({{IPA|x}}; {{lang|fr|y}}, {{respell|Z}}) {{convert|5|km}} {{cite web|url=u}}"
    clean_wikitext(wikitext, stats=stats)
    assert stats == Counter({"templates_rendered": 2, "punctuation_repaired": 2})
    stats.clear()
    clean_wikitext("Plain text, no templates (none).", stats=stats)
    assert stats == Counter()


@pytest.mark.parametrize(
    "wikitext",
    ["{{convert}}", "{{convert||km}}", "{{convert|x|km|mi}}", "{{birth date|abc}}", "{{as of}}", "{{chem}}",
     "{{death date and age|1865|4|15|x}}", "{{nihongo}}", "{{lang|fr}}", "{{transl|ar}}", "{{quote}}",
     "{{convert|1e400|km|mi}}", "{{as of|2010|13}}", "{{ {{lang|fr|x}} }}"],
)  # fmt: skip
def test_malformed_calls_never_raise(wikitext: str) -> None:
    text, links = clean_wikitext(f"A {wikitext} b", RenderOptions(convert_output=True))
    assert text.startswith("A") and text.endswith("b") and links == []


def test_quality_checks_can_fail() -> None:
    assert quality.broken_punctuation("Algeria ( '; Dzayer), x (, ) y, , z\n; w")
    assert quality.link_errors("abc", [(0, 5, "X"), (1, 2, "")]) and quality.link_errors(" a", [(0, 2, "A")])


def test_adjacent_templates_keep_the_rendered_one() -> None:
    # from the excerpt's Albania, once the <ref> between them is gone
    wikitext = "coastline length is {{convert|476|km|0|abbr=on}}<ref>x</ref>{{rp|240}} and extends"
    assert clean_wikitext(wikitext)[0] == "coastline length is 476 km and extends"
    assert clean_wikitext("A {{rp|1}}{{convert|5|km}} b {{rp|2}}{{rp|3}}.")[0] == "A 5 kilometres b."


def test_ingest_counts_renderings_and_repairs_and_obeys_convert_output(tmp_path) -> None:
    from dumps import page, write_plain

    from preprocessing.ingest import IngestConfig, ingest, inputs_for_file
    from storage.schemas import PAGES
    from storage.shards import part_paths

    wikitext = (
        "'''Aruba''' ({{IPAc-en|ə|ˈ|r|uː|b|ə}}; {{lang|nl|Aruba}})"
        " lies {{convert|29|km|mi}} off [[Venezuela]]."
    )
    dump = write_plain(tmp_path / "testwiki-20260301-pages-articles.xml", [page(1, "Aruba", wikitext)])
    texts = {}
    for convert_output in (False, True):
        run_dir = tmp_path / f"run-{convert_output}"
        cfg = IngestConfig(workers=1, convert_output=convert_output)
        manifest = ingest(cfg, inputs_for_file(dump), run_dir, progress=False)
        assert (manifest["stats"]["templates_rendered"], manifest["stats"]["punctuation_repaired"]) == (2, 1)
        texts[convert_output] = pq_text(part_paths(run_dir, PAGES)[0])
    assert texts == {
        False: "Aruba (Aruba) lies 29 kilometres off Venezuela.",
        True: "Aruba (Aruba) lies 29 kilometres (18 mi) off Venezuela.",
    }


def pq_text(path) -> str:
    import pyarrow.parquet as pq

    return pq.read_table(path)["text"][0].as_py()
