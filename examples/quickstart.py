"""Ingest a folder, search it, and ask a cited question: the whole library in 50 lines.

    python examples/quickstart.py [FOLDER] [--store DIR]

Runs offline with the packaged models; set OPENAI_API_KEY (and use --config openai) or pass
--llm-base-url for generated rather than extractive answers.
"""

import argparse
from pathlib import Path

from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.core.prompts import PromptTemplate

from mmrag_li import MultiModalRAG, VerifiedCitationQueryEngine

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

    # The same engine built by hand, with a LlamaIndex node postprocessor and a prompt of our own.
    engine = VerifiedCitationQueryEngine.from_defaults(
        rag.as_retriever(), settings=rag.settings, llm_base_url=args.llm_base_url,
        node_postprocessors=[SimilarityPostprocessor(similarity_cutoff=0.01)])
    engine.update_prompts({"system_prompt": PromptTemplate(
        "You answer for the ACME archive from the evidence only. Cite every fact like [E1].")})
    print(f"\nprompts: {', '.join(engine.get_prompts())}")
    response = engine.query(question)
    print(f"A: {response}\nverification: {response.metadata['verification'].get('reasons') or 'ok'}")
    rag.close()


if __name__ == "__main__":
    main()
