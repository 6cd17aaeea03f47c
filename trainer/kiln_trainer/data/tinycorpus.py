"""A small English + Chinese corpus for tests, the demo and tiny training runs.

The text is generated here from hand-written templates and word lists (nothing downloaded), with a
fixed seed, and committed under ``corpus/``; regenerate with ``python -m kiln_trainer.data.tinycorpus``.
The grammar is varied enough for a tiny GPT's loss to fall well below the unigram entropy, yet
regular enough that a few minutes on a CPU show it learning.

Files: ``en_stories.txt`` and ``zh_stories.txt`` (paragraph per document), ``en_notes.jsonl.gz`` and
``zh_notes.jsonl`` (field ``text``, plus ``date``).
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

CORPUS_DIR = Path(__file__).parent / "corpus"

EN = {
    "name": ["Anna", "Ben", "Clara", "David", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kira",
             "Leo", "Maya", "Nora", "Omar", "Pia", "Quinn", "Rosa", "Sam", "Tara"],
    "role": ["baker", "teacher", "fisherman", "doctor", "gardener", "painter", "carpenter", "nurse",
             "farmer", "student", "librarian", "sailor", "miller", "weaver", "potter"],
    "place": ["the old harbour", "the village square", "the quiet library", "the hill behind the school",
              "the market by the river", "the small bakery", "the forest path", "the train station",
              "the garden of the museum", "the bridge over the canal", "the workshop", "the lighthouse"],
    "time": ["Early in the morning", "Late one evening", "On a rainy Tuesday", "Just before noon",
             "At the end of the summer", "During the first snow", "After the long winter", "One bright afternoon"],
    "obj": ["a wooden box", "an old map", "a letter with no name", "a basket of apples", "a broken clock",
            "a blue umbrella", "a small brown dog", "a book of songs", "a jar of honey", "a paper kite",
            "a silver key", "a warm loaf of bread"],
    "verb": ["found", "carried", "repaired", "painted", "lost", "sold", "borrowed", "opened", "hid", "shared"],
    "feel": ["happy", "tired", "curious", "worried", "proud", "calm", "surprised", "hopeful"],
    "weather": ["The wind was cold", "The sun was warm", "Rain fell softly", "Fog covered the roofs",
                "The sky was clear", "Snow lay on the fields"],
    "topic": ["bread", "rivers", "bridges", "bees", "clocks", "maps", "ships", "trees", "paper", "glass"],
    "fact": ["needs patience and care", "has a long history in many countries", "changes with the seasons",
             "is studied in schools around the world", "depends on clean water and good soil",
             "was improved by many small inventions", "is easier to understand with a simple drawing",
             "connects people who live far apart"],
}

EN_SENT = [
    "{time}, {name} the {role} walked to {place}.",
    "{name} {verb} {obj} near {place}.",
    "{weather}, so {name} felt {feel}.",
    "When {name} {verb} {obj}, everyone in {place} was {feel}.",
    "{name} told {name2} a story about {obj}.",
    "\"Where did you find {obj}?\" asked {name2}.",
    "The {role} smiled and said that {topic} {fact}.",
    "{name} and {name2} worked together until the evening.",
    "Later, {name} wrote a short note and left it at {place}.",
    "Nobody knew who had {verb} {obj}, but {name} had an idea.",
    "Every year, people in the town remember that {topic} {fact}.",
    "{name2} counted {n} steps from the door to {place}.",
]

ZH = {
    "name": ["小明", "小红", "王老师", "李医生", "张阿姨", "陈师傅", "刘同学", "赵爷爷", "孙奶奶", "周先生",
             "吴小姐", "郑叔叔"],
    "place": ["公园", "图书馆", "小河边", "菜市场", "学校门口", "山脚下", "老街", "火车站", "花园里", "码头"],
    "time": ["今天早上", "昨天晚上", "一个下雨的下午", "春天的时候", "周末", "天刚亮的时候", "中午", "冬天的傍晚"],
    "obj": ["一本旧书", "一把雨伞", "一封信", "一篮苹果", "一只小猫", "一张地图", "一个木盒子", "一瓶蜂蜜",
            "一只风筝", "一把钥匙"],
    "verb": ["找到了", "带来了", "修好了", "买了", "送给朋友", "打开了", "藏起了", "画了"],
    "feel": ["很高兴", "有点累", "非常好奇", "有些担心", "很自豪", "很平静", "十分惊讶"],
    "weather": ["天气很好", "外面下着小雨", "风很大", "天空很蓝", "雪下得很厚", "雾很浓"],
    "topic": ["面包", "河流", "桥梁", "蜜蜂", "时钟", "地图", "茶叶", "竹子", "纸张", "瓷器"],
    "fact": ["需要耐心和细心", "在很多国家都有很长的历史", "会随着季节变化", "是学生们喜欢的话题",
             "离不开干净的水和土地", "经过许多小发明才慢慢改进", "把住在远方的人联系在一起"],
}

ZH_SENT = [
    "{time}，{name}去了{place}。",
    "{name}在{place}{verb}{obj}。",
    "{weather}，所以{name}{feel}。",
    "{name}对{name2}说：“你知道{topic}{fact}吗？”",
    "{name2}笑着回答：“我听说过，{topic}{fact}。”",
    "后来，{name}和{name2}一起回家了。",
    "大家都说{topic}{fact}。",
    "{name}在本子上写下了今天的事情。",
    "{name2}从{place}走了{n}步才到家。",
    "没有人知道是谁{verb}{obj}，可是{name}好像明白了。",
]


def _fill(rng: random.Random, template: str, words: dict[str, list[str]]) -> str:
    name, name2 = rng.sample(words["name"], 2)
    slots = {k: rng.choice(v) for k, v in words.items()}
    slots.update(name=name, name2=name2, n=str(rng.randint(3, 400)))
    return template.format(**slots)


def paragraph(rng: random.Random, lang: str) -> str:
    words, sents = (EN, EN_SENT) if lang == "en" else (ZH, ZH_SENT)
    n = rng.randint(3, 8)
    joiner = " " if lang == "en" else ""
    return joiner.join(_fill(rng, rng.choice(sents), words) for _ in range(n))


def generate(out_dir: Path = CORPUS_DIR, seed: int = 2024, scale: int = 1) -> list[Path]:
    """Write the corpus files; `scale` multiplies the number of documents (benchmarks use more)."""
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    en_txt = "\n\n".join(paragraph(rng, "en") for _ in range(900 * scale)) + "\n"
    zh_txt = "\n\n".join(paragraph(rng, "zh") for _ in range(700 * scale)) + "\n"
    (out_dir / "en_stories.txt").write_text(en_txt, encoding="utf-8")
    (out_dir / "zh_stories.txt").write_text(zh_txt, encoding="utf-8")

    def notes(lang: str, count: int) -> str:
        rows = []
        for i in range(count):
            day = f"20{rng.randint(10, 25):02d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            rows.append(json.dumps({"id": f"{lang}-{i}", "date": day, "text": paragraph(rng, lang)},
                                   ensure_ascii=False))
        return "\n".join(rows) + "\n"

    en_gz = out_dir / "en_notes.jsonl.gz"
    en_gz.write_bytes(gzip.compress(notes("en", 500 * scale).encode("utf-8"), mtime=0))
    (out_dir / "zh_notes.jsonl").write_text(notes("zh", 400 * scale), encoding="utf-8")
    return sorted(out_dir.iterdir())


def files() -> list[Path]:
    """The committed corpus files."""
    return sorted(p for p in CORPUS_DIR.iterdir() if p.is_file())


if __name__ == "__main__":
    for p in generate():
        print(p, p.stat().st_size)
