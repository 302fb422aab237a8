import pandas as pd
import pytest

from aduan.model.taxonomy import Taxonomy, agency_class
from tests.conftest import SURABAYA


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return Taxonomy.load()


def test_taxonomy_has_12_to_20_categories_with_codes_and_descriptions(taxonomy):
    assert 12 <= len(taxonomy.categories) <= 20
    for category in taxonomy.categories:
        assert category.code and category.name and category.description


def test_taxonomy_maps_every_frequent_surabaya_topic():
    if not SURABAYA.is_file():
        pytest.skip(f"{SURABAYA} not present")
    taxonomy = Taxonomy.load()
    counts = pd.read_csv(SURABAYA, usecols=["topic"])["topic"].value_counts()
    unmapped = [t for t, n in counts.items() if n >= 10 and not taxonomy.is_mapped(t)]
    assert unmapped == []


def test_taxonomy_unknown_topic_gets_default(taxonomy):
    assert taxonomy.category_of_topic("PJU") == "PJU"
    assert taxonomy.category_of_topic("  jukir   LIAR ") == "PARKIR"
    assert taxonomy.category_of_topic("something new") == taxonomy.default_category
    assert taxonomy.category_of_topic(None) == taxonomy.default_category


def test_taxonomy_refuses_a_topic_in_two_categories():
    raw = {
        "default_category": "A",
        "categories": [
            {"code": "A", "name": "a", "topics": ["x"]},
            {"code": "B", "name": "b", "topics": ["X"]},
        ],
    }
    with pytest.raises(ValueError, match="two categories"):
        Taxonomy.from_dict(raw)


def test_taxonomy_agency_registry_finds_aliases(taxonomy):
    assert taxonomy.agency("dlh").name == "Dinas Lingkungan Hidup"
    assert taxonomy.agency("Satpol PP").code == "Satpol PP"
    assert taxonomy.agency("Dinas Sumber Daya Air dan Bina Marga").code == "DSDABM"
    assert taxonomy.agency("no such office") is None


def test_taxonomy_collapses_village_and_district_offices():
    assert agency_class("Kelurahan Dukuh Setro") == "Kelurahan"
    assert agency_class("Kecamatan Tambaksari") == "Kecamatan"
    assert agency_class("Dinas  Sosial") == "Dinas Sosial"
