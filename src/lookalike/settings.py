"""Settings, read from ``LOOKALIKE_*`` environment variables (CLI flags override them).

The same code runs against the embedded defaults (local Tansu broker, Qdrant on disk) and a real
deployment (Kafka cluster, Qdrant server): only these settings change.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Kafka's own default limit on one record (broker max.message.bytes, producer max.request.size).
KAFKA_DEFAULT_MESSAGE_BYTES = 1_048_576


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "lookalike"


class Settings(BaseSettings):
    """All runtime settings. Field ``foo_bar`` is read from ``LOOKALIKE_FOO_BAR``."""

    model_config = SettingsConfigDict(env_prefix="LOOKALIKE_", extra="ignore")

    # --- storage -----------------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Local state: the embedded index, local broker address, dead-letter ledger.",
    )

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers, e.g. 'kafka1:9092,kafka2:9092'. "
        "Unset: `lookalike up` starts a local broker on loopback.",
    )
    broker_port: int = Field(
        default=0,
        description="Port of the local broker started by `lookalike up` (0: any free port).",
    )
    topic_prefix: str = Field(default="lookalike", description="Prefix of every topic name.")
    topic_partitions: int = Field(
        default=4, ge=1, description="Partitions of the topics we create."
    )
    app_id: str = Field(default="lookalike", description="Faust app id (= Kafka consumer group).")
    rebalance_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds the consumer group waits for members to (re)join. Worker start-up "
        "waits about this long; raise it on a large real cluster.",
    )
    session_timeout: float = Field(
        default=10.0, gt=0, description="Seconds before a silent worker is dropped from the group."
    )
    max_message_bytes: int = Field(
        default=KAFKA_DEFAULT_MESSAGE_BYTES,
        ge=10_000,
        description="Largest message accepted on the uploads topic and produced by lookalike "
        "(Kafka's default). Bigger messages are dead-lettered; the publisher refuses them. Keep "
        "it at or below the brokers' max.message.bytes.",
    )
    broker_lost_exit: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a worker tolerates an unreachable broker before it exits with "
        "status 3 (so a supervisor restarts it).",
    )
    shutdown_grace: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a worker may take to stop after SIGTERM/SIGINT (or after losing its "
        "broker) before it exits anyway.",
    )
    retry_max_delay: float = Field(
        default=30.0,
        gt=0,
        description="Longest pause between retries of a batch that failed for an infrastructure "
        "reason (broker, disk, index); pauses double from 1 s up to this.",
    )

    kafka_fetch_wait: float = Field(
        default=0.05,
        ge=0,
        description="Longest time the worker's Kafka fetch waits at the broker for new events "
        "when there are none (Faust fixes 1.5 s; a lower wait makes a single upload searchable "
        "sooner, at the cost of a few idle fetch requests a second).",
    )
    publish_batch_bytes: int = Field(
        default=1_048_576,
        ge=16_384,
        description="Bytes the publisher (UploadPublisher, `lookalike publish`) gathers per "
        "partition into one produce request. Image events are tens of KB: Kafka's 16 KB "
        "default sends them one by one.",
    )
    publish_linger: float = Field(
        default=0.005,
        ge=0,
        description="Seconds the publisher waits for a batch to fill before sending it.",
    )

    # --- Kafka security (TLS, SASL) ------------------------------------------------------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How clients talk to Kafka: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL.",
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        description="CA certificate(s) (PEM) that sign the brokers' certificates. Unset: the "
        "system's trust store.",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS."
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None, description="Private key (PEM) of the client certificate."
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of the client key, if it is encrypted."
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Check that a broker's certificate names its host."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None,
        description="SASL mechanism for SASL_PLAINTEXT / SASL_SSL: PLAIN, SCRAM-SHA-256 or "
        "SCRAM-SHA-512.",
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")

    # --- Qdrant ------------------------------------------------------------------------------
    qdrant_url: str | None = Field(
        default=None,
        description="Qdrant server URL. Unset: the embedded index (Qdrant's engine in-process) "
        "under the data dir.",
    )
    qdrant_api_key: str | None = Field(default=None, description="Qdrant API key (server only).")
    collection_prefix: str = Field(
        default="lookalike", description="Prefix of Qdrant collections and the serving alias."
    )
    quantization: Literal["none", "int8"] = Field(
        default="int8",
        description="Scalar quantisation of stored vectors: int8 keeps a 1-byte copy of each "
        "vector in RAM for the graph search and rescores the best candidates with the full "
        "vectors, left on disk, so under a memory limit only the codes must stay in RAM "
        "(measured at 100k: recall@10 0.995-1.0 against 1.0 with none; see the README's "
        "index section).",
    )

    # --- encoder and batching ----------------------------------------------------------------
    encoder: str = Field(
        default="efficientnet-lite0",
        description="Encoder name (see `lookalike encoders`) or a fine-tuned checkpoint path.",
    )
    encoder_weights: Path | None = Field(
        default=None, description="Explicit weights file for the encoder (torchvision families)."
    )
    download_weights: bool = Field(
        default=False, description="Let torchvision download missing weights into its cache."
    )
    device: str = Field(default="auto", description="Torch device: auto, cpu, cuda, cuda:N.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="Inference precision. auto: bf16 where the CPU/GPU runs it natively, else fp32",
    )
    compile: bool = Field(
        default=True,
        description="torch.compile the encoder: about 2x the images/s, about 15 s more start-up.",
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        description="Torch intra-op threads (0: cores - 1, leaving one to the pipeline).",
    )
    inference_batch: int | None = Field(
        default=None,
        ge=1,
        description="Images per forward pass (a micro-batch is embedded in chunks of this many). "
        "Unset: 8 on a CPU (measured best on 2 cores: activations stay in cache), 128 on a GPU.",
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Images per micro-batch. Unset: 64 on a CPU, 256 on a GPU.",
    )
    batch_max_wait: float = Field(
        default=0.02,
        gt=0,
        description="Seconds to wait for a micro-batch to fill (bounds latency under light load; "
        "a backlog fills batches at once whatever it is).",
    )
    decode_threads: int | None = Field(
        default=None,
        ge=1,
        description="Threads reading and decoding images (with decode processes: reading only). "
        "Unset: 4 (measured best on 2 cores).",
    )
    decode_processes: int | None = Field(
        default=None,
        ge=0,
        description="Processes decoding and resizing images, so decoding scales with the cores "
        "(0: decode in the threads). Unset: 1 on a CPU device (0 on a single core), which takes "
        "decoding off the GIL the worker's other stages share; cores - 2 beside a GPU.",
    )
    batches_in_flight: int | None = Field(
        default=None,
        ge=1,
        description="Micro-batches in flight (one decodes while another is embedded and another "
        "written). Unset: 3.",
    )
    encoder_process: bool | None = Field(
        default=None,
        description="Run each model version's encoder in a child process of its own, so its "
        "forward passes never wait for the GIL the write step, the URL fetch loop and Faust "
        "hold; the child embeds the uploads, the search queries and the backfill of its version "
        "alike. Costs the child's memory. Unset: on when the model runs on the CPU, off beside a "
        "GPU (not measured there yet).",
    )

    # --- category validation ---------------------------------------------------------------
    validation_enabled: bool = Field(
        default=True, description="Check each upload's declared category against its neighbours."
    )
    validation_threshold: float = Field(
        default=0.85,
        ge=0.0,
        le=1.0,
        description="Alert when confidence >= this (see `lookalike validate-eval` for the curve).",
    )
    validation_k: int = Field(default=30, ge=1, description="Neighbours consulted per upload.")
    validation_min_examples: int = Field(
        default=5,
        ge=1,
        description="Below this many images (and no exemplar) a category cannot be judged.",
    )
    validation_exclude_same_seller: bool = Field(
        default=False, description="Ignore the seller's own images as evidence."
    )

    # --- index lifecycle ---------------------------------------------------------------------
    backfill_batch: int = Field(
        default=32,
        ge=1,
        description="Images per rollout-backfill step (the cursor is saved after each).",
    )
    blob_dir: Path | None = Field(
        default=None,
        description="Where inline image bytes are kept so a rollout can re-embed them. "
        "Unset: DATA_DIR/blobs (several workers on several hosts sharing a Qdrant server share "
        "one on shared storage, with LOOKALIKE_BLOB_PACKS=false).",
    )
    blob_packs: bool = Field(
        default=True,
        description="Append kept image bytes to pack files with a SQLite index (needs a local "
        "disk). false: a file per image, for a blob folder on shared storage that several hosts "
        "write (slower: ~0.25 ms of kernel time per new image). Reads find both.",
    )

    # --- input safety --------------------------------------------------------------------------
    image_root: Path | None = Field(
        default=None,
        description="Directory under which file-path image references are allowed. "
        "Unset: file references are rejected (publish sends the bytes inline).",
    )
    fetch_timeout: float = Field(
        default=10.0, gt=0, description="Seconds allowed to download one image URL, in total."
    )
    fetch_connections: int = Field(
        default=64,
        ge=1,
        description="Open connections for fetching image URLs, all hosts together (one pooled "
        "client; HTTP/2 where the server offers it multiplexes requests on each).",
    )
    fetch_per_host: int = Field(
        default=16,
        ge=1,
        description="Image URLs fetched at once from one host (politeness toward a CDN).",
    )
    fetch_http2: bool = Field(
        default=True,
        description="Offer HTTP/2 when fetching https image URLs (plain http stays HTTP/1.1).",
    )
    max_image_bytes: int = Field(default=20_000_000, ge=1, description="Largest accepted image.")
    max_image_pixels: int = Field(
        default=50_000_000, ge=1, description="Largest accepted width*height (decompression bombs)."
    )
    fetch_allow: str = Field(
        default="",
        description="Image URLs may only reach public addresses, except these (comma-separated): "
        "host names, '*.domain' wildcards, IP addresses or CIDRs, e.g. "
        "'cdn.internal,10.20.0.0/16'.",
    )
    max_attributes_bytes: int = Field(
        default=16_384,
        ge=2,
        description="Largest `attributes` map of an event, as JSON; bigger ones are "
        "dead-lettered (and refused by the publisher).",
    )
    max_attributes_keys: int = Field(
        default=100, ge=0, description="Most keys in an `attributes` map, nested maps included."
    )
    max_attributes_depth: int = Field(
        default=3, ge=1, description="Deepest nesting of maps and lists in an `attributes` map."
    )
    dead_letter_payload_bytes: int = Field(
        default=65_536,
        ge=0,
        description="Bytes of a rejected message's value its dead letter carries; a longer value "
        "is cut (its size and SHA-256 are kept), so a dead letter always fits the topic.",
    )
    keep_dead_letter_payloads: bool = Field(
        default=True,
        description="Keep the whole value of a cut dead letter on disk, under "
        "DATA_DIR/dead-letter-payloads/<sha256> (the dead letter names the file).",
    )

    # --- clicks and training pairs ---------------------------------------------------------
    click_window: float = Field(
        default=1800.0,
        gt=0,
        description="Seconds after a search during which its clicks become training pairs; "
        "later clicks are dead-lettered as too old.",
    )
    click_grace: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a click waits for its search to arrive before it is dead-lettered "
        "as unknown (the two topics are consumed independently).",
    )
    pairs_dir: Path | None = Field(
        default=None,
        description="Where training pairs are appended as JSON Lines, one folder per date. "
        "Unset: {data_dir}/training-pairs.",
    )
    keep_query_images: bool = Field(
        default=True,
        description="Keep images uploaded as search queries (by content hash, in the blob "
        "folder) so training pairs can use them.",
    )

    # --- the learning loop (`lookalike learn`) ----------------------------------------------
    learn_min_new_pairs: int = Field(
        default=500,
        ge=1,
        description="Train a candidate only when at least this many pairs arrived since the "
        "last candidate was trained.",
    )
    learn_margin: float = Field(
        default=0.01,
        description="Holdout mAP the candidate must gain over the serving version to be rolled "
        "out (it is never rolled out when worse, whatever the margin).",
    )
    learn_recall_tolerance: float = Field(
        default=0.0,
        ge=0.0,
        description="How much holdout Recall@10 the candidate may lose against the serving "
        "version (0: none).",
    )
    learn_holdout_dir: Path | None = Field(
        default=None,
        description="Labelled holdout folder (a sub-folder per category, never indexed or "
        "clicked) candidates are judged on; on the worker's machine too (the promotion gate "
        "evaluates there). Required by `lookalike learn run`.",
    )
    learn_require_approval: bool = Field(
        default=False,
        description="Wait for `lookalike learn approve ID` before promoting a candidate whose "
        "backfill is done (false: promote when the gate passes).",
    )
    learn_epochs: int = Field(
        default=25, ge=1, description="Training budget: epochs per candidate."
    )
    learn_batch_size: int = Field(
        default=256,
        ge=2,
        description="Pairs per optimiser step (`train --batch-size`). With tail blocks and views, "
        "64 measured better than 256 (more steps from the same clicks; README, Learning "
        "variants).",
    )
    learn_tail: bool = Field(
        default=True,
        description="Fine-tune the base's last block too (slower, better with enough clicks); "
        "false: a projection head only.",
    )
    learn_tail_blocks: int = Field(
        default=0,
        ge=0,
        description="With LOOKALIKE_LEARN_TAIL: also fine-tune this many blocks before the "
        "base's last stage (`train --tail-blocks`).",
    )
    learn_views: int = Field(
        default=1,
        ge=1,
        description="With LOOKALIKE_LEARN_TAIL: augmented views per training image "
        "(`train --views`; 1: none).",
    )
    learn_click_groups: float = Field(
        default=0.0,
        ge=0.0,
        description="Also pull together the communities of the click graph found at this "
        "Louvain resolution (`train --click-groups`; 0: off). For pairs that hold a second "
        "round of clicks, on a fine-tuned model's results.",
    )
    learn_continue: bool = Field(
        default=False,
        description="Start each candidate from the serving fine-tuned model (its head and "
        "trained blocks, as `train --init` does) instead of the base, so a later round needs "
        "fewer epochs; a serving model trained with other blocks or head starts over from the "
        "base, and says so.",
    )
    learn_keep_base: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="The base encoder's weight in a candidate's vector (`train --keep-base`): "
        "normalize(w x base + (1-w) x tuned), which keeps the base's Recall@10 (0: the tuned "
        "vector alone).",
    )
    learn_interpolate_base: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="The base encoder's share of every trained weight in a candidate "
        "(`train --interpolate-base`; weight-space ensembling, WiSE-FT): one model that keeps "
        "more of the base's Recall@10 (0: the trained weights).",
    )
    learn_interval: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds between cycles of `lookalike learn run --every` when no interval "
        "is given.",
    )
    learn_dir: Path | None = Field(
        default=None,
        description="Candidates' checkpoints and the decision log. Unset: {data_dir}/learn.",
    )

    # --- HTTP API ------------------------------------------------------------------------------
    api_host: str = Field(default="127.0.0.1", description="Interface the HTTP API binds to.")
    api_port: int = Field(default=6066, ge=1, le=65535, description="Port of the HTTP API.")
    api_url: str | None = Field(
        default=None,
        description="Base URL the CLI talks to. Unset: http://{api_host}:{api_port}.",
    )
    api_read_tokens: SecretStr | None = Field(
        default=None,
        description="Bearer tokens (comma-separated) of the read role: search, images, clicks.",
    )
    api_admin_tokens: SecretStr | None = Field(
        default=None,
        description="Bearer tokens (comma-separated) of the admin role: everything (rollout, "
        "reviews, exemplars, vectors, dead letters, stats). With no tokens at all the API is "
        "open, and only allowed on a loopback interface.",
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description="Let the API bind a non-loopback interface without any token (behind your "
        "own authenticating proxy).",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="The token the CLI sends. Unset: the first admin token, else the first read "
        "token.",
    )
    api_max_json_bytes: int = Field(
        default=1_000_000,
        ge=1_000,
        description="Largest JSON request body, after any gzip/deflate decoding.",
    )
    search_anchor_slots: int = Field(
        default=0,
        ge=0,
        le=10,
        description="Places on each first page of 10 results kept for the anchor version's "
        "best matches (`lookalike rollout anchor` keeps the previous version written as the "
        "anchor, e.g. the base after a fine-tuned model is promoted): the serving model ranks, "
        "and the anchor's top N it left off the page take its last N places. Keeps the base's "
        "Recall@10 under a fine-tuned model, and shows buyers what it would hide. Each query "
        "is then embedded by both encoders. 0: off.",
    )
    search_log_timeout: float = Field(
        default=2.0,
        gt=0,
        description="Seconds a search waits for its SearchServed record to reach Kafka. Past "
        'it (broker down) the search is answered anyway with "logged": false and counted.',
    )

    thumbnail_cache_bytes: int = Field(
        default=200_000_000,
        ge=0,
        description="Disk the console's thumbnails may take under DATA_DIR/thumbnails; the "
        "least recently used go first (0: none kept, each is made again).",
    )

    # --- logs ----------------------------------------------------------------------------------
    log_level: str = Field(
        default="info",
        description="debug, info, warning or error. Kafka clients and Faust's internals log at "
        "warning and above unless this is debug.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text: one readable line per record; json: one JSON object per line "
        "(time, level, logger, message, exception) for a log collector.",
    )

    @field_validator(
        "data_dir",
        "image_root",
        "encoder_weights",
        "pairs_dir",
        "blob_dir",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        mode="after",
    )
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    # --- tokens --------------------------------------------------------------------------------
    @staticmethod
    def _tokens(secret: SecretStr | None) -> list[str]:
        text = secret.get_secret_value() if secret is not None else ""
        return [token.strip() for token in text.split(",") if token.strip()]

    @property
    def read_tokens(self) -> list[str]:
        return self._tokens(self.api_read_tokens)

    @property
    def admin_tokens(self) -> list[str]:
        return self._tokens(self.api_admin_tokens)

    def client_headers(self) -> dict[str, str]:
        """What the CLI (and `lookalike train`) send to the worker's API."""
        token = self.api_token.get_secret_value() if self.api_token is not None else ""
        token = token or next(iter(self.admin_tokens + self.read_tokens), "")
        return {"Authorization": f"Bearer {token}"} if token else {}

    # --- derived names -------------------------------------------------------------------------
    def topic(self, name: str) -> str:
        """Full topic name for a logical topic ('uploads', 'dead-letters', ...)."""
        return f"{self.topic_prefix}.{name}"

    @property
    def uploads_topic(self) -> str:
        return self.topic("uploads")

    @property
    def dead_letters_topic(self) -> str:
        return self.topic("dead-letters")

    @property
    def searches_topic(self) -> str:
        return self.topic("searches")

    @property
    def clicks_topic(self) -> str:
        return self.topic("clicks")

    @property
    def alerts_topic(self) -> str:
        return self.topic("alerts")

    @property
    def alerts_path(self) -> Path:
        return self.data_dir / "alerts.sqlite"

    @property
    def base_api_url(self) -> str:
        return (self.api_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    @property
    def worker_name(self) -> str:
        """This worker among those sharing an index: its host and data dir."""
        digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:8]
        return f"{socket.gethostname()}-{digest}"

    @property
    def index_path(self) -> Path:
        """The embedded index (used when no Qdrant server is configured)."""
        return self.data_dir / "index"

    @property
    def qdrant_path(self) -> Path:
        """Where lookalike before 0.2 kept its embedded index (qdrant-client local mode)."""
        return self.data_dir / "qdrant"

    @property
    def broker_file(self) -> Path:
        """Where `lookalike up` records the local broker it started (pid, address)."""
        return self.data_dir / "broker.json"

    @property
    def blobs_path(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def thumbnails_path(self) -> Path:
        return self.data_dir / "thumbnails"

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / "ledger.sqlite"

    @property
    def dead_letter_payloads_path(self) -> Path:
        return self.data_dir / "dead-letter-payloads"

    @property
    def training_pairs_topic(self) -> str:
        return self.topic("training-pairs")

    @property
    def clicks_path(self) -> Path:
        """Click-join state: searches in the window, clicks seen, pending clicks, outbox."""
        return self.data_dir / "clicks.sqlite"

    @property
    def training_pairs_dir(self) -> Path:
        return self.pairs_dir or self.data_dir / "training-pairs"

    @property
    def learn_path(self) -> Path:
        return self.learn_dir or self.data_dir / "learn"

    @property
    def all_topics(self) -> list[str]:
        return [
            self.uploads_topic,
            self.dead_letters_topic,
            self.alerts_topic,
            self.searches_topic,
            self.clicks_topic,
            self.training_pairs_topic,
        ]
