"""Splitting a question that asks several things into the parts searched on their own."""

from __future__ import annotations

from kb.query_parts import MAX_PARTS, question_parts


def test_a_question_asking_two_things_has_two_parts():
    assert question_parts(
        "How many labour inspectors does Bangladesh have, and how many would it need to meet the ratio?"
    ) == ["How many labour inspectors does Bangladesh have", "how many would it need to meet the ratio"]
    assert question_parts("What should a store employee do - and what should they avoid doing?") == [
        "What should a store employee do",
        "and what should they avoid doing",
    ]
    assert question_parts("Returnees said the grants were too small. Did the evaluation agree with them?") == [
        "Returnees said the grants were too small",
        "Did the evaluation agree with them",
    ]


def test_a_single_question_has_no_parts():
    assert question_parts("What warning signs should a school resource officer watch for?") == []
    # "and" joining two nouns is not a second question
    assert question_parts("Which services do survivors of trafficking and their children need most?") == []


def test_pieces_too_short_to_search_with_are_dropped():
    # "is that enough?" says nothing on its own, so one part is left: no split at all
    assert question_parts("What is the highest fine for child labour in Bangladesh, and is that enough?") == []


def test_a_pasted_paragraph_is_not_searched_sentence_by_sentence():
    paragraph = " ".join(f"Survivors in district number {n} asked for more shelter places." for n in range(30))
    parts = question_parts(paragraph)
    assert len(parts) == MAX_PARTS
    assert parts[0] == "Survivors in district number 0 asked for more shelter places"
