# ruff: noqa: E501 - a real mysqldump line is long
import gzip

from preprocessing.sqldump import iter_rows, iter_wikibase_items

DUMP = r"""-- MySQL dump 10.19
CREATE TABLE `page_props` (
  `pp_page` int(10) unsigned NOT NULL,
  `pp_propname` varbinary(60) NOT NULL,
  `pp_value` blob NOT NULL,
  `pp_sortkey` float DEFAULT NULL
);
INSERT INTO `page_props` VALUES (12,'wikibase_item','Q6199',NULL),(12,'page_image_free','A,b (c).jpg',NULL),(25,'wikibase-shortdesc','It\'s a \"test\", (with) commas',NULL);
INSERT INTO `page_props` VALUES (39,'wikibase_item','Q2',1.5e3),(-1,'x','back\\slash\nnewline',-2);
INSERT INTO `redirect` VALUES (5,0,'Not_props','','');
"""


def _write(tmp_path, text, gz):
    path = tmp_path / ("p.sql.gz" if gz else "p.sql")
    (gzip.open if gz else open)(path, "wt", encoding="utf-8").write(text)
    return path


def test_rows_with_escapes_commas_and_parentheses(tmp_path):
    rows = list(iter_rows(_write(tmp_path, DUMP, gz=True), "page_props"))
    assert rows == [
        (12, "wikibase_item", "Q6199", None),
        (12, "page_image_free", "A,b (c).jpg", None),
        (25, "wikibase-shortdesc", 'It\'s a "test", (with) commas', None),
        (39, "wikibase_item", "Q2", 1500.0),
        (-1, "x", "back\\slash\nnewline", -2),
    ]


def test_only_wikibase_items_of_the_named_table(tmp_path):
    path = _write(tmp_path, DUMP, gz=False)
    assert list(iter_wikibase_items(path)) == [(12, "Q6199"), (39, "Q2")]
    assert list(iter_rows(path, "redirect")) == [(5, 0, "Not_props", "", "")]
