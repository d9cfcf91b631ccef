"""Export and quantise a (LoRA fine-tuned) reranker; measure what each format costs.

    python tools/quantize.py methods
    python tools/quantize.py check  --model smollm2-135m --methods all
    python tools/quantize.py export --model smollm2-135m [--adapter runs/train/best] --out exports/smollm2 \
        --formats all --data data/prepared/ml-100k-<hash>           # GGUF read back on dataset prompts
    python tools/quantize.py ptq    --model smollm2-135m --methods all --data data/prepared/ml-100k-<hash>
    python tools/quantize.py report --model smollm2-135m --exports exports/smollm2 --ptq all \
        --data data/prepared/ml-100k-<hash> --max_users 50 --max_history 5 --out runs/quant-report
    python run_rerank.py --data DIR --model exports/smollm2/gguf-q8_0     # any artifact loads via --model

Subcommands: ``methods`` lists what is offered; ``check`` answers the architecture x method question from
config.json alone; ``export`` writes one folder per format (metadata.json in each, sizes.md beside them;
existing folders are refused unless --overwrite); ``ptq`` measures the in-memory methods against fp32 and
bf16; ``report`` reranks with every variant and writes report.md + report.png.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("tools.quantize")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/quantize.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("methods", help="list the export formats and PTQ methods offered")

    def model_args(sp, methods_flag: str, default: str) -> None:
        sp.add_argument("--model", required=True, help="base model: alias (smollm2-135m), folder or hub id")
        sp.add_argument(methods_flag, default=default, help="'all' or a comma list (see `methods`)")

    c = sub.add_parser("check", help="which methods this model's architecture supports (reads config.json only)")
    model_args(c, "--methods", "all")

    e = sub.add_parser("export", help="merge the adapter and write the artifact folders")
    model_args(e, "--formats", "all")
    e.add_argument("--adapter", help="LoRA adapter folder to merge into the base first")
    e.add_argument("--out", required=True, help="parent folder; one sub-folder per format")
    e.add_argument("--overwrite", action="store_true", help="replace existing artifact folders")
    e.add_argument("--data", help="prepared dataset: GGUF read-back check on its val prompts (default: fixed texts)")
    e.add_argument("--retriever", default="sasrec", help="candidates used in the calibration prompts")
    e.add_argument("--no_verify", action="store_true", help="skip the GGUF read-back check")

    q = sub.add_parser("ptq", help="apply in-memory PTQ methods; error and speed vs fp32 / bf16 on dataset prompts")
    model_args(q, "--methods", "all")
    q.add_argument("--adapter", help="LoRA adapter folder to merge first")
    q.add_argument("--data", help="prepared dataset folder (calibration prompts: its val split)")
    q.add_argument("--retriever", default="sasrec", help="candidates used in the calibration prompts")
    q.add_argument("--n_prompts", type=int, default=16)
    q.add_argument("--out", help="write ptq.md / ptq.json here")

    r = sub.add_parser("report", help="rerank with every variant; Markdown + PNG quality report")
    r.add_argument("--model", required=True, help="the full-precision model the exports came from")
    r.add_argument("--adapter", help="LoRA adapter merged into --model for the reference and PTQ rows (the same "
                                     "one the exports were made with)")
    r.add_argument("--exports", help="folder written by `export`")
    r.add_argument("--ptq", default="all", help="in-memory methods to include: 'all', 'none' or a comma list")
    r.add_argument("--data", required=True, help="prepared dataset folder")
    r.add_argument("--split", default="test", choices=("val", "test"))
    r.add_argument("--retriever", default="sasrec", help="whose candidates to rerank (prepared folder)")
    r.add_argument("--max_users", type=int, default=50)
    r.add_argument("--max_history", type=int, default=5)
    r.add_argument("--max_text_chars", type=int, default=200, help="item detail text per item (0: titles only; "
                                                                    "match the fine-tune's prompts)")
    r.add_argument("--llm_batch_size", type=int, default=8)
    r.add_argument("--out", required=True, help="report folder")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from tools.export.methods import all_methods, get_method, parse_methods

    if args.command == "methods":
        for m in all_methods():
            log.info("%-15s %-8s %2d-bit  %s", m.name, m.kind, m.bits, m.description)
        return 0
    if args.command == "check":
        from tools.export.compat import compat_table
        from tools.export.exporter import load_config

        cfg = load_config(args.model)
        methods = all_methods() if args.methods == "all" else [get_method(n.strip()) for n in args.methods.split(",")]
        table = compat_table(cfg, methods)
        for name, verdict in table.items():
            log.info("%s %-15s %s", cfg.model_type, name, verdict)
        return 0 if all(v == "ok" for v in table.values()) else 1
    if args.command == "export":
        from tools.export.calibration import dataset_prompts
        from tools.export.exporter import export_all, sizes_table

        methods = parse_methods(args.formats, "artifact")
        texts = None
        if not args.no_verify and any(m.name.startswith("gguf") for m in methods):
            from rerank.models.llm import load_tokenizer
            from rerank.models.resolve import resolve_model

            texts = dataset_prompts(load_tokenizer(resolve_model(args.model)), args.data, n=4,
                                    retriever=args.retriever)
        rows = export_all(args.model, Path(args.out), methods, adapter=args.adapter, overwrite=args.overwrite,
                          verify_texts=texts)
        log.info("sizes:\n%s", sizes_table(rows))
        return 0
    if args.command == "ptq":
        return _ptq(args, parse_methods(args.methods, "memory"))
    if args.command == "report":
        from config import RerankConfig
        from tools.export.report import report_table, run_report

        memory = [] if args.ptq == "none" else parse_methods(args.ptq, "memory")
        cfg = RerankConfig(data=args.data, split=args.split, retriever=args.retriever, max_users=args.max_users, max_history=args.max_history,
                           max_text_chars=args.max_text_chars, llm_batch_size=args.llm_batch_size)
        rows = run_report(args.model, Path(args.exports) if args.exports else None, memory, cfg, Path(args.out),
                          adapter=args.adapter)
        log.info("report:\n%s", report_table(rows))
        return 0
    raise AssertionError(args.command)


def _ptq(args, methods) -> int:
    import torch

    from tools.export.calibration import dataset_prompts
    from tools.export.compat import check_compat
    from tools.export.exporter import load_config
    from tools.export.merge import merge_adapter
    from tools.export.ptq import evaluate_methods, ptq_table

    check_compat(load_config(args.model), methods)
    merged = merge_adapter(args.model, args.adapter)
    texts = dataset_prompts(merged.tokenizer, args.data, n=args.n_prompts, retriever=args.retriever)
    rows = evaluate_methods(merged.model, merged.tokenizer, methods, texts)
    table = ptq_table(rows)
    log.info("PTQ on %d prompts, %d torch threads:\n%s", len(texts), torch.get_num_threads(), table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ptq.md").write_text(table)
        (out / "ptq.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
