"""Sentences and list items of a page (kb/text.py), as the answerer quotes them."""

from __future__ import annotations

from kb.text import page_sentences, split_sentences

# Two paragraphs numbered as UN reports number every paragraph, each wrapped over full-width
# lines, then a list introduced by a colon, with short numbered items.
UN_STYLE_PAGE = """\
41. The Committee met the Special Rapporteur on the human rights of migrants during its session
to discuss their joint work on the protection of migrant workers and members of their families
in countries of transit. She also insisted that regularization was the most durable solution
for addressing the vulnerability of migrants to trafficking in persons.
42. On International Migrants Day the Committee issued a joint statement with the Committee on
the Rights of Persons with Disabilities and called for action to address the hardship endured by
migrants with disabilities, who had mostly been ignored in migration policies and programmes in
every region and who faced barriers in access to services and to justice.
The Committee recommends that States parties:
1. Ratify the Convention.
2. Regularize migrants in an irregular situation.
"""


def test_numbered_paragraphs_are_prose_not_list_items():
    sentences = page_sentences(UN_STYLE_PAGE)
    items = [s for s, is_item, _ in sentences if is_item]
    assert items == ["Ratify the Convention.", "Regularize migrants in an irregular situation."]
    texts = [s for s, _, _ in sentences]
    # the paragraph number is a marker, not part of the sentence
    assert "The Committee met the Special Rapporteur" in texts[0] and not texts[0].startswith("41")
    assert any(s.startswith("On International Migrants Day") for s in texts)
    # sentences carry the number of their paragraph: the first two share one, the next does not
    blocks = [block for _, _, block in sentences]
    assert blocks[0] == blocks[1] != blocks[2]


def test_number_abbreviations_do_not_end_a_sentence():
    text = "The Committee adopted general comment No. 6 (2024) on migrants. See Art. 5 and Fig. 3 below. It ended."
    assert split_sentences(text) == [
        "The Committee adopted general comment No. 6 (2024) on migrants.",
        "See Art. 5 and Fig. 3 below.",
        "It ended.",
    ]
