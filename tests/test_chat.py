"""Which candidates an answer may use: the relevance floor, fixed or measured, and unscored candidates."""

from __future__ import annotations

from types import SimpleNamespace

from freeret_rag.chat import ChatSettings, relevance_floor, select_sources
from freeret_rag.items import Hit, Item


def hits() -> list[Hit]:
    # two reranked candidates (0.9, 0.4), then three that were never reranked
    scored = [Hit(Item("text", item_id="a"), rerank_score=0.9), Hit(Item("text", item_id="b"), rerank_score=0.4)]
    return scored + [Hit(Item("text", item_id=name)) for name in "cde"]


def ids(selected: list[Hit]) -> list[str]:
    return [hit.item.item_id for hit in selected]


def test_a_fixed_threshold_never_lets_unscored_candidates_through():
    settings = ChatSettings(n_sources=5, min_relevance=0.3)
    floor = relevance_floor(settings, SimpleNamespace(relevance_floor=0.95))
    assert floor == 0.3  # the session's own threshold wins over the measured one
    assert ids(select_sources(hits(), settings, floor)) == ["a", "b"]
    assert ids(select_sources(hits(), ChatSettings(n_sources=5, min_relevance=0.99), 0.99)) == []


def test_auto_uses_the_measured_floor_or_none():
    auto = ChatSettings(n_sources=5, min_relevance=None)
    assert relevance_floor(auto, SimpleNamespace(relevance_floor=0.5)) == 0.5
    assert ids(select_sources(hits(), auto, 0.5)) == ["a"]
    assert relevance_floor(auto, SimpleNamespace(relevance_floor=None)) is None
    assert ids(select_sources(hits(), auto, None)) == list("abcde")


def test_no_floor_without_reranking_and_zero_means_off():
    assert relevance_floor(ChatSettings(rerank=False, min_relevance=0.9), SimpleNamespace(relevance_floor=0.5)) is None
    assert relevance_floor(ChatSettings(min_relevance=0.0), SimpleNamespace(relevance_floor=0.5)) is None
    assert ids(select_sources(hits(), ChatSettings(n_sources=2), None)) == ["a", "b"]
