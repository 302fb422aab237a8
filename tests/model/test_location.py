import pytest

from aduan.model.location import (
    GAZETTEER,
    MENTION,
    MENTION_CONFIDENCE,
    STREET,
    Gazetteer,
    LocationResolver,
    StreetIndex,
    Unit,
    tokens,
)

GAZ = Gazetteer(
    [
        ("Keputran", "Tegalsari"),
        ("Baratajaya", "Gubeng"),
        ("Ngagel", "Wonokromo"),
        ("Jemur Wonosari", "Wonocolo"),
        ("Genteng", "Genteng"),
    ]
)


def test_location_tokens_expand_abbreviations():
    assert tokens("Jl. Ngagel Jaya no.5 Kel. Baratajaya") == [
        "jalan",
        "ngagel",
        "jaya",
        "no",
        "kelurahan",
        "baratajaya",
    ]


def test_location_explicit_mentions_win():
    resolver = LocationResolver(GAZ)
    unit = resolver.resolve("Jl. Ngagel Jaya 5 kel. barata jaya kec. gubeng")
    assert unit == Unit("Baratajaya", "Gubeng", MENTION, MENTION_CONFIDENCE)


def test_location_fuzzy_and_compact_gazetteer_names():
    resolver = LocationResolver(GAZ)
    assert resolver.resolve("rumah di jemurwonosari gang 3").kelurahan == "Jemur Wonosari"
    assert resolver.resolve("kelurahan keputrann").kelurahan == "Keputran"


def test_location_learned_streets_beat_misleading_names():
    """'Ngagel Jaya Tengah' lies in Baratajaya, not in kelurahan Ngagel: learned from data."""
    rows = [
        ("Jalan Ngagel Jaya Tengah no 10", "Baratajaya"),
        ("ngagel jaya tengah dekat bengkel", "Baratajaya"),
        ("Jl Ngagel Jaya Tengah 77", "Baratajaya"),
    ]
    resolver = LocationResolver(GAZ, StreetIndex.learn(rows, GAZ))
    assert (
        LocationResolver(GAZ).resolve("jalan Ngagel Jaya Tengah dekat bengkel").kelurahan
        == "Ngagel"
    )
    unit = resolver.resolve("jalan Ngagel Jaya Tengah dekat bengkel")
    assert (unit.kelurahan, unit.kecamatan, unit.source) == ("Baratajaya", "Gubeng", STREET)


def test_location_text_counts_only_explicit_mentions():
    resolver = LocationResolver(GAZ)
    unit = resolver.resolve(None, "sampah menumpuk di kec. genteng")
    assert unit == Unit(None, "Genteng", MENTION, MENTION_CONFIDENCE)
    # a name in running text is no evidence ("genteng" is also a roof tile)
    assert resolver.resolve(None, "sampah menumpuk di genteng") is None
    assert resolver.resolve("", "tidak ada petunjuk lokasi") is None


def test_location_no_place_gives_null_even_with_learned_streets():
    """People write complaint phrases in the address field; those words must not name a unit
    when they appear in another complaint's text."""
    rows = [("mohon bantuan", "Genteng")] * 5 + [("info jadwal vaksin", "Keputran")] * 3
    resolver = LocationResolver(GAZ, StreetIndex.learn(rows, GAZ))
    assert resolver.resolve(None, "tolong info jadwal vaksin") is None
    assert resolver.resolve(None, "mohon bantuan sembako") is None


def test_location_names_source_and_confidence():
    rows = [("Jalan Tunjungan no 5", "Genteng")] * 4 + [("Jalan Tunjungan 9", "Keputran")]
    resolver = LocationResolver(GAZ, StreetIndex.learn(rows, GAZ))
    unit = resolver.resolve("jl tunjungan depan hotel")
    assert (unit.kelurahan, unit.source) == ("Genteng", STREET)
    assert 0.55 <= unit.confidence < 1
    named = resolver.resolve("Jl. Tunjungan, Genteng")
    assert named.source == GAZETTEER and named.confidence > unit.confidence
    mention = resolver.resolve("kel. keputran")
    assert (mention.kelurahan, mention.source) == ("Keputran", MENTION)


def test_location_thin_or_split_evidence_gives_null():
    rows = [("Jalan Kembang Jepun 1", "Genteng"), ("Jalan Kembang Jepun 2", "Keputran")]
    resolver = LocationResolver(GAZ, StreetIndex.learn(rows * 3, GAZ))
    assert resolver.resolve("jalan kembang jepun") is None  # half and half
    once = LocationResolver(GAZ, StreetIndex.learn([("Kapasari 3", "Genteng")], GAZ))
    assert once.resolve("dekat kapasari") is None  # one word seen once: too little


def test_location_index_round_trips_json():
    index = StreetIndex.learn([("Jalan Tunjungan 5", "Genteng")], GAZ)
    assert StreetIndex.from_json(index.to_json()).grams == index.grams


def test_location_gazetteer_file_is_validated(tmp_path):
    bad = tmp_path / "g.csv"
    bad.write_text("desa,kota\nA,B\n")
    with pytest.raises(ValueError, match="kelurahan, kecamatan"):
        Gazetteer.load(bad)
