"""Config sections that live outside :mod:`mmrag_li.config` (which re-exports them): the
Ray executor's sizing and the store (backend, versions, ANN index).

Split out only to keep modules small; import them from :mod:`mmrag_li.config` as before.
"""

from __future__ import annotations

from typing import Dict, Literal

from pydantic import Field

from .config_base import StrictModel

__all__ = ["RayStageConfig", "RayConfig", "StoreConfig"]


class RayStageConfig(StrictModel):
    """One Ray Data stage (``map_batches`` over an actor pool that loads its models once)."""

    actors: int = Field(1, ge=1, description="Most actors in the stage's pool (it starts with min_actors).")
    min_actors: int = Field(1, ge=1, description="Actors started before the first batch.")
    batch_size: int = Field(4, ge=1, description="Files per call of one actor.")
    num_cpus: float = Field(0.5, gt=0, description="CPUs per actor; keep it fractional (a pool that takes every "
                                                    "CPU leaves none for Ray Data's tasks and hangs).")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor (Ray sets CUDA_VISIBLE_DEVICES; device auto uses it).")
    resources: Dict[str, float] = Field(default_factory=dict, description="Custom resources per actor: {\"ocr\": 1} "
                                        "pins the stage to nodes started with --resources='{\"ocr\": N}'.")


class RayConfig(StrictModel):
    """``ingest.executor: ray``: where the cluster is and how the stages are sized."""

    address: str = Field("", description="host:port or ray://...; '' = $RAY_ADDRESS, else a local Ray for the run.")
    read: RayStageConfig = Field(default_factory=lambda: RayStageConfig(actors=2), description="Read+OCR+captions.")
    embed: RayStageConfig = Field(default_factory=lambda: RayStageConfig(batch_size=8), description="Text+image vectors.")
    wave_files: int = Field(2000, ge=1, description="Files hashed on the driver and shipped as one Dataset.")
    max_restarts: int = Field(-1, description="Restarts of a killed stage actor (-1 = unlimited).")
    max_task_retries: int = Field(3, ge=0, description="Retries of a batch whose actor died.")
    retry_rounds: int = Field(2, ge=0, description="Re-sends (one file per task) of files a failed job lost; files "
                                                   "still lost are reported failed.")


class StoreConfig(StrictModel):
    backend: Literal["lancedb", "weaviate"] = "lancedb"
    keep_versions: bool = Field(False, description="Keep old LanceDB table versions after delete / prune / changed "
                                "files (they hold the removed rows until `mmrag gc`); false = remove them at once.")
    gc_grace_s: float = Field(900.0, ge=0, description="`mmrag gc` leaves unreferenced blobs younger than this "
                              "alone (an ingest running in another process may be about to reference them).")
    # LanceDB vector index (flat search is exact but linear: ~2 s per query at 1M rows on 2 cores)
    ann_index_min_rows: int = Field(100_000, ge=0, description="A collection with at least this many rows gets an "
                                    "ANN vector index after the next ingest/optimise (0 = never; exact search below).")
    ann_index_type: Literal["IVF_HNSW_SQ", "IVF_PQ"] = Field("IVF_HNSW_SQ", description="IVF_HNSW_SQ: int8 codes + "
                                                             "graph (recall@10 >= 0.95 with the defaults below); "
                                                             "IVF_PQ: smaller, needs refine_factor for recall.")
    ann_nprobes: int = Field(20, ge=1, description="IVF partitions searched per query (at least).")
    ann_refine_factor: int = Field(2, ge=0, description="Re-rank k x this candidates with the full vectors (0 = off); "
                                   "fixes the int8 codes' order: recall@10 0.93 -> 0.998 at 250k rows, +5 ms.")
    ann_ef: int = Field(0, ge=0, description="HNSW candidate list size per partition (0 = Lance's default).")
    # Weaviate
    mode: Literal["local", "custom", "cloud", "embedded"] = "local"
    url: str = ""
    host: str = "localhost"
    port: int = 8080
    grpc_port: int = 50051
    api_key_env: str = "WEAVIATE_API_KEY"
    embedded_binary_path: str = ""
    embedded_version: str = ""
    collection_prefix: str = "Mmrag"
