"""Answer normalisation and matching, as the reference evaluators do it.

- VQAv2, two named scoring conventions (both in use; a run records which):
  ``vqaeval`` (default) is the official GT-Vision-Lab ``vqaEval.py``: prediction and human
  answers are normalised (punctuation, number words, articles, contractions) only when the ten
  human answers disagree; when they all agree the stripped raw strings are compared, so "Two."
  scores 0 against ten "2". ``always`` is lmms-eval's ``vqav2_process_results`` (since its
  2025-08 accuracy fix; the EvalAI submission path also normalises every prediction): the
  prediction and every human answer are normalised every time.
  Both keep the official quirks: at most 32 periods are stripped (``re.UNICODE`` passed as the
  count of ``periodStrip.sub``), and a digit-comma-digit anywhere deletes every punctuation mark
  instead of replacing it by a space.
- GQA: ``normalised`` (default) is an exact match after lower-casing and stripping punctuation;
  ``exact`` is the official GQA ``eval.py`` (``predicted == gold``, no normalisation).
- POPE: the reference parser (first sentence, commas removed, "No"/"not"/"no" -> no, else yes);
  as in POPE's ``evaluate.py`` a label other than "no" is positive.
- describe (embedded world, "a red circle, a blue square"): ``exact`` (default) is GQA's normalised
  exact match of the whole description; ``objects`` gives partial credit, the share of object phrases
  (the parts between commas) named right at their place (`describe_object_score`).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}


#: the official ``periodStrip.sub("", text, re.UNICODE)`` passes the flag as the count: 32 periods at most
_PERIOD_COUNT = int(re.UNICODE)
#: lmms-eval's comma rule (``(?<=\d)(\,)+(?=\d)``); the official one is ``_COMMA_STRIP``
_EVALAI_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")

VQA_SCORINGS = {
    "vqaeval": "the official vqaEval.py: normalise only when the human answers disagree",
    "always": "lmms-eval: normalise the prediction and every human answer, always",
}


def _process_punctuation(text: str, comma_strip: re.Pattern[str] = _COMMA_STRIP) -> str:
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or comma_strip.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_COUNT)


def _process_digit_article(text: str) -> str:
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_vqa_answer(text: str) -> str:
    """The official VQAv2 answer processing (what ``vqaEval.py`` applies when the answers disagree)."""
    return _process_digit_article(_process_punctuation(_clean(text)))


def vqa_soft_accuracy(prediction: str, answers: Sequence[str], scoring: str = "vqaeval") -> float:
    """Mean over the leave-one-out subsets of the human answers of min(1, matches / 3), under ``scoring``."""
    if not answers:
        raise ValueError("VQA soft accuracy needs at least one reference answer")
    if scoring not in VQA_SCORINGS:
        raise ValueError(f"unknown VQAv2 scoring {scoring!r}; expected one of {sorted(VQA_SCORINGS)}")
    gts, pred = [_clean(a) for a in answers], _clean(prediction)
    comma = _COMMA_STRIP if scoring == "vqaeval" else _EVALAI_COMMA_STRIP
    if scoring == "always" or len(set(gts)) > 1:  # the official evaluator normalises only when the answers disagree
        gts = [_process_digit_article(_process_punctuation(a, comma)) for a in gts]
        pred = _process_digit_article(_process_punctuation(pred, comma))
    accs = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1 :]
        accs.append(min(1.0, sum(a == pred for a in others) / 3.0))
    return sum(accs) / len(accs)


_STRIP_PUNCT = str.maketrans("", "", string.punctuation)


GQA_SCORINGS = {
    "normalised": "exact match after lower-casing and stripping punctuation",
    "exact": "the official GQA eval.py: predicted == gold, strings as given",
}


def normalize_gqa_answer(text: str) -> str:
    return " ".join(text.lower().translate(_STRIP_PUNCT).split())


def gqa_exact_match(prediction: str, answer: str, scoring: str = "normalised") -> float:
    """1.0 when the prediction matches the answer under ``scoring``."""
    if scoring == "exact":
        return float(prediction == answer)
    if scoring != "normalised":
        raise ValueError(f"unknown GQA scoring {scoring!r}; expected one of {sorted(GQA_SCORINGS)}")
    return float(normalize_gqa_answer(prediction) == normalize_gqa_answer(answer))


def parse_pope_answer(text: str) -> str:
    """POPE's reference parsing; anything without "No"/"not"/"no" counts as "yes"."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def pope_label_positive(label: str) -> bool:
    """POPE's ``evaluate.py``: every label other than "no" is positive."""
    return label != "no"


DESCRIBE_SCORINGS = {
    "exact": "exact match of the whole description after lower-casing and stripping punctuation",
    "objects": "partial credit: object phrases (between commas) right at their place / the longer list's length",
}


def describe_phrases(text: str) -> list[str]:
    """A description's object phrases, each normalised as GQA answers are (empty phrases dropped)."""
    return [p for p in (normalize_gqa_answer(part) for part in text.split(",")) if p]


def describe_object_score(prediction: str, reference: str) -> float:
    """Share of the object phrases named right at their place, over the longer of the two lists.

    "a red circle, a blue cube" against "a red circle, a blue square, a green triangle" scores 1/3; naming an
    extra object costs as much as missing one, so only the exact description scores 1.
    """
    pred, ref = describe_phrases(prediction), describe_phrases(reference)
    if not ref:
        raise ValueError("a describe reference needs at least one object phrase")
    return sum(p == r for p, r in zip(pred, ref)) / max(len(pred), len(ref))


def describe_score(prediction: str, reference: str, scoring: str = "exact") -> float:
    """The describe task's score of ``prediction`` under ``scoring`` (`DESCRIBE_SCORINGS`)."""
    if scoring == "exact":
        return gqa_exact_match(prediction, reference, "normalised")
    if scoring == "objects":
        return describe_object_score(prediction, reference)
    raise ValueError(f"unknown describe scoring {scoring!r}; expected one of {sorted(DESCRIBE_SCORINGS)}")
