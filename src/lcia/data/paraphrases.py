"""Paraphrased instructions for ``ni-cit-diverse`` (as CoIN's Diverse and 10Type variants).

Each task gets four training paraphrases (cycled over its training and test examples) and one more
seen only at test time. The two tasks of a family paraphrase the same instruction in different words
(only the first task keeps the family's original wording), so grouping must recognise a family by
meaning, and routing meets instructions it never saw. Answer formats (choice lists, label sets) are
kept in every paraphrase.
"""

from __future__ import annotations

INTENTS = (
    "add_to_playlist, book_restaurant, get_weather, play_music, search_screening_event, search_creative_work, "
    "and rate_book"
)
SENTIMENTS = "positive, negative, neutral or ambivalent"

# task -> (training paraphrases, test-only paraphrases)
DIVERSE: dict[str, tuple[list[str], list[str]]] = {
    "add2": (
        [
            "Solve the arithmetic problem. Answer with the number only.",
            "Work out the result of this calculation and reply with just the number.",
            "Compute the answer to the sum below. Give only the numeric result.",
            "What does this arithmetic expression evaluate to? Respond with a single number.",
        ],
        ["Calculate the value of the math problem and write nothing but the number."],
    ),
    "plural": (
        [
            "Complete the sentence with the right form of the word.",
            "Fill in the missing word so that the sentence is grammatical.",
            "Finish the sentence using the correct form of the given word.",
            "Write the word that correctly ends this sentence, in its proper form.",
        ],
        ["Supply the correctly inflected word that completes the sentence."],
    ),
    "past-tense": (
        [
            "End the sentence with the word in the form the grammar requires.",
            "Give the grammatically correct form of the word to complete the sentence.",
            "Add the final word of the sentence, inflected correctly.",
            "Which form of the word completes this sentence? Write only that word.",
        ],
        ["Complete the sentence by writing the word in its correct grammatical form."],
    ),
    "qasc-overlap": (
        [
            "Answer with a word or short phrase taken from the given text.",
            "Reply using a short span copied from the passage.",
            "Respond with a word or brief phrase that appears in the text.",
            "Give your answer as a short excerpt of the provided text.",
        ],
        ["Your answer must be a word or a few words quoted from the given text."],
    ),
    "qasc-answer": (
        [
            "Use a word or short phrase from the text as your answer.",
            "Extract a brief phrase from the given text as the answer.",
            "Answer by quoting a short piece of the passage.",
            "Pick a word or a short expression out of the text to respond.",
        ],
        ["Respond with a short phrase lifted directly from the text provided."],
    ),
    "intent": (
        [
            f"Predict the intent of the utterance. The possible choices for the intents are: {INTENTS}.",
            f"Classify what the user wants in this utterance. Choose one of: {INTENTS}.",
            f"Which intent does this request express? Options: {INTENTS}.",
            f"Label the utterance with its intent, picking from: {INTENTS}.",
        ],
        [f"Identify the user's goal in the utterance; answer with one of these intents: {INTENTS}."],
    ),
    "parentheses": (
        [
            "Determine whether the given sequence of parentheses is properly matched.",
            "Check if the brackets in this string are balanced.",
            "Decide whether this sequence of brackets is well-formed.",
            "Is every opening parenthesis in the sequence closed correctly?",
        ],
        ["Tell whether the brackets in the sequence open and close in a valid way."],
    ),
    "sentiment": (
        [
            f"Determine whether given opinion is {SENTIMENTS} in terms of its sentiment.",
            f"Classify the sentiment of this review sentence as {SENTIMENTS}.",
            f"What is the sentiment of the opinion: {SENTIMENTS}?",
            f"Label the emotional tone of the sentence ({SENTIMENTS}).",
        ],
        [f"Rate the opinion's polarity: is it {SENTIMENTS}?"],
    ),
}
