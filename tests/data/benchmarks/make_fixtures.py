"""Build the small benchmark fixtures beside this script, each in the layout its set is published in.

    python tests/data/benchmarks/make_fixtures.py

Parquet as on the hub: OKVQA (HuggingFaceM4/OK-VQA), TextVQA (facebook/textvqa), ScienceQA (derek-thomas/ScienceQA),
MathVista (AI4Math/MathVista, testmini). JSON with image folders as in the benchmarks' GitHub releases: MathVision
(`test.jsonl`) and MathVerse (`testmini.json`). MathVista's rows are five real testmini questions, answers and
metadata, copied from the public question file into `mathvista_testmini_questions.json`; their images are not
public text, so every image here is drawn.

RICES has a known answer on OKVQA: `train` holds blends of the first validation image at weights 0.2, 0.4, 0.6,
0.8 over one unrelated drawing (more of the query image = more similar, so retrieval must return them in that
order, the most similar last), and one exact copy of it, which must never be retrieved for that query.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
SIZE = 64
BLEND_WEIGHTS = (0.2, 0.4, 0.6, 0.8)


def drawing(seed: int) -> Image.Image:
    """A background colour and a few filled shapes, different for every seed."""
    rng = random.Random(seed)
    image = Image.new("RGB", (SIZE, SIZE), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = rng.randrange(SIZE - 16), rng.randrange(SIZE - 16)
        box = (x0, y0, x0 + rng.randrange(12, SIZE - x0), y0 + rng.randrange(12, SIZE - y0))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_cell(image: Image.Image, name: str) -> dict:
    return {"bytes": png(image), "path": name}


def write_parquet(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def okvqa_row(question_id: int, image: Image.Image, question: str, raw: list[str]) -> dict:
    answers = [
        {"answer": answer.lower(), "raw_answer": answer, "answer_confidence": "yes", "answer_id": i + 1}
        for i, answer in enumerate(raw)
    ]
    return {
        "image": image_cell(image, f"COCO_val2014_{question_id:012d}.jpg"),
        "question_type": "other",
        "confidence": 3,
        "answers": answers,
        "image_id": question_id,
        "answer_type": "other",
        "question_id": question_id,
        "question": question,
    }


def okvqa() -> None:
    validation = [
        okvqa_row(1001, drawing(1), "What sport can you use this for?", ["skiing"] * 6 + ["ski"] * 4),
        okvqa_row(1002, drawing(2), "What is the animal in the picture?", ["Dogs"] * 10),
        okvqa_row(1003, drawing(3), "How many wheels does it have?", ["two"] * 8 + ["2"] * 2),
    ]
    query = drawing(1)
    train = [
        okvqa_row(2000 + i, Image.blend(drawing(100), query, weight), f"Blend {weight}?", [f"blend {i}"] * 10)
        for i, weight in enumerate(BLEND_WEIGHTS)
    ]
    train.append(okvqa_row(2099, query, "The query image again?", ["copy"] * 10))
    train += [okvqa_row(2100 + i, drawing(200 + i), "What colour is it?", ["red"] * 10) for i in range(3)]
    write_parquet(validation, HERE / "okvqa" / "validation.parquet")
    write_parquet(train, HERE / "okvqa" / "train.parquet")


def textvqa() -> None:
    def row(question_id: int, seed: int, question: str, answers: list[str], split: str) -> dict:
        return {
            "image_id": f"img{question_id}",
            "question_id": question_id,
            "question": question,
            "question_tokens": question.rstrip("?").split(),
            "image": image_cell(drawing(seed), f"img{question_id}.jpg"),
            "image_width": SIZE,
            "image_height": SIZE,
            "flickr_original_url": "",
            "flickr_300k_url": "",
            "answers": answers,
            "image_classes": ["sign"],
            "set_name": split,
            "ocr_tokens": ["STOP"],
        }

    validation = [
        row(34602, 11, "what does the sign say?", ["stop"] * 9 + ["stop sign"], "val"),
        row(34603, 12, "what brand is this?", ["coca cola"] * 7 + ["coke"] * 3, "val"),
        row(34604, 13, "what number is on the shirt?", ["23"] * 10, "val"),
    ]
    train = [row(100 + i, 300 + i, "what is written here?", [f"word{i}"] * 10, "train") for i in range(6)]
    write_parquet(validation, HERE / "textvqa" / "validation.parquet")
    write_parquet(train, HERE / "textvqa" / "train.parquet")


def scienceqa() -> None:
    def row(seed: int | None, question: str, choices: list[str], answer: int, hint: str) -> dict:
        return {
            "image": image_cell(drawing(seed), "image.png") if seed is not None else None,
            "question": question,
            "choices": choices,
            "answer": answer,
            "hint": hint,
            "task": "closed choice",
            "grade": "grade4",
            "subject": "natural science",
            "topic": "geography",
            "category": "Geography",
            "skill": "Read a map",
            "lecture": "",
            "solution": "",
        }

    test = [
        row(21, "Which of these states is farthest north?", ["Ohio", "Texas", "Florida"], 0, ""),
        row(None, "Which word would you find on a dictionary page?", ["apple", "zebra"], 0, "No image here."),
        row(22, "Which animal's feet are adapted for digging?", ["mole", "eagle"], 0, "Moles dig burrows."),
        row(23, "What is the capital of Utah?", ["Denver", "Salt Lake City", "Boise", "Helena"], 1, ""),
    ]
    train = [row(400 + i, f"Which is shown {i}?", ["left", "right"], i % 2, "") for i in range(5)]
    train.append(row(None, "Which is softer?", ["rock", "pillow"], 1, ""))
    write_parquet(test, HERE / "scienceqa" / "test.parquet")
    write_parquet(train, HERE / "scienceqa" / "train.parquet")


def mathvista() -> None:
    rows = json.loads((HERE / "mathvista_testmini_questions.json").read_text())
    for row in rows:
        row["decoded_image"] = image_cell(drawing(500 + int(row["pid"])), row["image"])
    write_parquet(rows, HERE / "mathvista" / "testmini.parquet")


def save_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(image))


def mathvision() -> None:
    items = [
        ("1", "<image1>\nHow many squares are in the picture?", ["1", "2", "3", "4", "5"], "C"),
        ("2", "How many edges does the solid in <image1> have?", [], "12"),
        ("3", "Which figure comes next in the row?\n<image1>", ["A", "B", "C", "D", "E"], "B"),
        ("4", "The area of the grey triangle is 6. What is the area of the whole square?", [], "24"),
        ("5", "What fraction of the circle is shaded?", ["1/2", "1/3", "1/4", "2/3", "3/4"], "D"),
    ]
    lines = []
    for number, (item_id, question, options, answer) in enumerate(items):
        image = f"images/{item_id}.png"
        save_png(drawing(600 + number), HERE / "mathvision" / image)
        row = {"id": item_id, "question": question, "options": options, "image": image, "answer": answer}
        lines.append(json.dumps({**row, "solution": None, "level": 1 + number % 5, "subject": "counting"}))
    (HERE / "mathvision" / "test.jsonl").write_text("\n".join(lines) + "\n")


def mathverse() -> None:
    versions = ["Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant", "Vision Only", "Text Only"]
    question = (
        "As shown in the figure, AB is the diameter of circle O and angle ABC = 40. What is angle BAC?\n"
        "Choices:\nA:40\nB:50\nC:60\nD:80"
    )
    rows = []
    for number, version in enumerate(versions):
        image = f"images/{number + 1}.png"
        save_png(drawing(700 + number), HERE / "mathverse" / image)
        rows.append(
            {
                "sample_index": str(number + 1),
                "problem_index": "1",
                "problem_version": version,
                "question": question if version != "Vision Only" else "",
                "image": image if version != "Text Only" else "",
                "answer": "B",
                "question_type": "multi-choice",
                "metadata": {"split": "testmini", "source": "GeoQA", "subject": "Plane Geometry"},
                "query_wo": question,
                "query_cot": question,
                "question_for_eval": question,
            }
        )
    rows.append({**rows[0], "sample_index": "7", "problem_index": "2", "answer": "5", "question_type": "free-form"})
    rows[-1]["question"] = "The radius of circle O is 5. How long is OA?"
    (HERE / "mathverse" / "testmini.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    okvqa()
    textvqa()
    scienceqa()
    mathvista()
    mathvision()
    mathverse()
