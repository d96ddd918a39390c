"""Ingest a folder, search it, and ask a cited question: the whole library in 30 lines.

    python examples/quickstart.py [FOLDER] [--store DIR]

Runs offline with the packaged models; set OPENAI_API_KEY (and use configs/openai.yaml) or pass
--llm-base-url for generated rather than extractive answers.
"""

import argparse
from pathlib import Path

from mmrag_li import MultiModalRAG

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default=str(HERE / "data"))
    ap.add_argument("--store", default=".mmrag-quickstart")
    ap.add_argument("--config", default=None)
    ap.add_argument("--llm-base-url", default=None)
    args = ap.parse_args()

    rag = MultiModalRAG.from_config(args.config, store_dir=args.store)
    report = rag.ingest([args.folder])
    print(f"ingested {report.files} files -> {report.nodes}; failed: {report.failed}")

    for query in ("a photo of a cat", "delivery note for order 4711"):
        print(f"\nsearch: {query}")
        for hit in rag.retrieve(query, k=3):
            breakdown = ", ".join(f"{k}={v:.2f}" for k, v in hit.scores.items())
            print(f"  {hit.score:.4f}  {Path(hit.source).name}  page={hit.page}  [{breakdown}]")

    question = "What is the total of invoice 4711?"
    response = rag.as_query_engine(llm_base_url=args.llm_base_url).query(question)
    meta = response.metadata
    print(f"\nQ: {question}\nA: {response}\nverified={meta['verified']} citations={meta['citation_ids']}")
    for item in meta["evidence"]:
        print(f"  [{item['id']}] {Path(item['source']).name} page={item['page']}")
    rag.close()


if __name__ == "__main__":
    main()
