"""Explanations: exact TF-IDF contributions and leave-one-word-out, for both model kinds."""

import numpy as np

from aduan.model.classifier import ComplaintClassifier
from aduan.model.explain import (
    LEAVE_ONE_OUT,
    NGRAMS,
    explain,
    leave_one_word_out,
    ngram_contributions,
    tfidf_part,
)
from aduan.model.text import normalize_text


def test_explain_ngram_contributions_add_up_to_the_linear_score(tiny_model):
    classifier = ComplaintClassifier.load(tiny_model)
    text = "lampu PJU padam gelap tolong pak"
    found = ngram_contributions(classifier, text, "agency", top_n=10_000)
    assert found.method == NGRAMS and found.label == "Dinas Perhubungan"
    assert found.terms[0][1] >= found.terms[-1][1] > 0
    assert {"pju", "padam"} <= {t for t, _ in found.terms[:6]}
    # Every feature's contribution, positive and negative, plus the intercept is the score.
    tfidf = tfidf_part(classifier)
    head = tfidf.heads["agency"]
    index = head.classes.index("Dinas Perhubungan")
    features = tfidf.features([normalize_text(text)])
    score = float((features @ head.coef[index].T)[0] + head.intercept[index])
    contributions = features.multiply(head.coef[index]).sum() + head.intercept[index]
    assert np.isclose(score, contributions)


def test_explain_leave_one_word_out_finds_the_deciding_word(tiny_model):
    classifier = ComplaintClassifier.load(tiny_model)
    # Two signals (the tiny model is certain of single-topic texts): the word of the winning
    # agency is the one whose removal costs it most.
    found = leave_one_word_out(classifier, "bansos tolong lampu padam", "agency")
    assert found.method == LEAVE_ONE_OUT and found.terms
    assert all(weight > 0 for _, weight in found.terms)
    expected = {"Dinas Sosial": {"bansos"}, "Dinas Perhubungan": {"lampu", "padam"}}
    assert found.terms[0][0] in expected[found.label]
    long = leave_one_word_out(classifier, " ".join(["lampu padam"] * 100), max_spans=10)
    assert all(len(term.split()) == 20 for term, _ in long.terms)  # spans, not 200 calls


def test_explain_transformer_defaults_to_leave_one_word_out(tiny_transformer):
    classifier = ComplaintClassifier.load(tiny_transformer)
    found = explain(classifier, "sampah menumpuk di TPS bau busuk")
    assert found.method == LEAVE_ONE_OUT
    assert (
        found.label
        == classifier.predict(["sampah menumpuk di TPS bau busuk"])[0].best("agency").label
    )
