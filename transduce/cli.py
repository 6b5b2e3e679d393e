"""The `transduce` command: the only module that reads argv.
Subcommands: quickstart, train, translate, evaluate, serve, quantize, export, average, plot, demo.

A problem with the user's input (data, config, model folder) is printed as one line,
`transduce: error: <file:line: problem>`, and exits with status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from transduce.config import Config, ConfigError, DecodeConfig, ServeConfig, options_of
from transduce.constants import CONFIG_FILE, TOKENIZER_KINDS
from transduce.data.readers import DataError, read_lines, read_pairs

USER_ERRORS = (DataError, ConfigError, FileNotFoundError, IsADirectoryError, PermissionError)


def _add_decode_options(p: argparse.ArgumentParser) -> None:
    """One flag per DecodeConfig field (--max-length for max_length); each defaults to None, the
    model's saved setting."""
    _add_options(p, "decode", DecodeConfig)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="weights for decoding: fp32, or bf16 (faster where the CPU/GPU has bfloat16 support)")


def _add_options(p: argparse.ArgumentParser, section: str, cls: type) -> None:
    """A flag per declared field of a config section, None when not given (the model's setting).
    A switch that is on by default is turned off by --no-NAME."""
    for declared in options_of(cls):
        text = f"{declared.help}; default: the model's {section}.{declared.name}".replace("%", "%%")
        if declared.kind is bool:
            text = "do not " + text if declared.default else text
            flag = declared.flag or ("--no-" if declared.default else "--") + declared.name.replace("_", "-")
            p.add_argument(flag, dest=declared.name, action="store_const", const=not declared.default,
                           default=None, help=text)
            continue
        flag = declared.flag or "--" + declared.name.replace("_", "-")
        if declared.choices is not None:
            p.add_argument(flag, dest=declared.name, choices=declared.choices, help=text)
        else:
            p.add_argument(flag, dest=declared.name, type=declared.kind, metavar=declared.kind.__name__.upper(),
                           help=text)


def _add_model_folders(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, nargs="+",
                   help="model folder; several folders (same vocabularies) decode as an ensemble")


def _section_overrides(args, section: str, cls: type) -> dict:
    """{"section.key": value} for the declared fields given on the command line."""
    return _given({f"{section}.{declared.name}": vars(args)[declared.name] for declared in options_of(cls)})


def _decode_overrides(args) -> dict:
    """The DecodeConfig fields given on the command line (None = the model's setting)."""
    return {declared.name: vars(args)[declared.name] for declared in options_of(DecodeConfig)}


def _given(values: dict) -> dict:
    """The command-line values that were given (an absent flag is None)."""
    return {key: value for key, value in values.items() if value is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transduce", description="Train, run and score sequence-to-sequence models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_quickstart, _add_train, _add_translate, _add_evaluate, _add_serve, _add_quantize, _add_export,
                _add_average, _add_plot, _add_demo):
        add(sub)
    return parser


def _add_quickstart(sub) -> None:
    p = sub.add_parser("quickstart", help="from a pairs file to a served model in one command",
                       description="Split PAIRS into train/dev/test (by a hash of each pair), choose the tokenizer "
                       "(characters for Chinese/Japanese, SentencePiece otherwise) and a model from the data, train "
                       "with early stopping, score the test set, show samples, and serve the page to try the model "
                       "on 127.0.0.1. Every choice is printed with its reason and can be overridden.")
    p.add_argument("pairs", help="pairs file: .tsv, .jsonl (optionally .gz)")
    p.add_argument("--out", default="runs/quickstart", help="folder for the splits, the model and the report")
    p.add_argument("--dev", type=int, default=500, help="dev pairs to split off (at most 10%%)")
    p.add_argument("--test", type=int, default=500, help="test pairs to split off (at most 10%%)")
    p.add_argument("--tokenizer", choices=TOKENIZER_KINDS, help="instead of choosing from the text")
    p.add_argument("--arch", choices=["lstm", "gru", "transformer"], help="instead of choosing from the size")
    p.add_argument("--steps", type=int, help="most training updates (early stopping may end sooner)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set model.hidden=512 (repeatable)")
    p.add_argument("--port", type=int, default=8000, help="port of the page (127.0.0.1)")
    p.add_argument("--no-serve", action="store_true", help="stop after the test report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model from pairs (or resume the run in --out)",
                       description="Train a model; the output folder is a model folder (config.json, vocabularies, "
                       "model.safetensors) plus checkpoints/ and log.jsonl. When --out already holds checkpoints, "
                       "the run resumes from the newest sound one (--fresh starts over); Ctrl-C saves a checkpoint "
                       "and stops.")
    p.add_argument("config", nargs="?", help="YAML config (optional: defaults give an attention LSTM; "
                   "when resuming, the run's own config.json)")
    p.add_argument("--train", help="training pairs: .tsv, .jsonl (or the source file of two aligned files)")
    p.add_argument("--train-target", help="target file when --train is the source side of two aligned files")
    p.add_argument("--dev", help="dev pairs, scored during training")
    p.add_argument("--dev-target", help="target file when --dev is a source file")
    p.add_argument("--out", required=True, help="output (model) folder")
    p.add_argument("--steps", type=int, help="optimizer updates (train.steps)")
    p.add_argument("--save-every", type=int, help="checkpoint period in updates (train.save_every)")
    p.add_argument("--fresh", action="store_true", help="start over in --out, deleting its checkpoints and log")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.hidden=512 (repeatable)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_translate(sub) -> None:
    p = sub.add_parser("translate", help="decode text with a trained model",
                       description="Translate lines from stdin (or --input) to stdout (or --output).")
    _add_model_folders(p)
    p.add_argument("--input", help="input text file, one source per line (default: stdin)")
    p.add_argument("--output", help="output file (default: stdout)")
    p.add_argument("--nbest", type=int, default=1, help="print the N best outputs per line, tab-separated with scores")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per line: {"source", "outputs": [{"text", "score", "tokens"}, ...]}')
    p.add_argument("--attention", action="store_true",
                   help="with --json: also each output's attention weights and the source tokens they weigh")
    _add_decode_options(p)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a model on pairs",
                       description="Decode the sources of --data and print a JSON report "
                       "(bleu, chrf, rouge1/2/L, exact_match, perplexity).")
    _add_model_folders(p)
    p.add_argument("--data", required=True, help="pairs to score (.tsv, .jsonl, or a source file with --data-target)")
    p.add_argument("--data-target", help="target file when --data is a source file")
    p.add_argument("--hypotheses", help="also write the outputs to this file")
    p.add_argument("--code-bleu", action="store_true",
                   help="also BLEU on code tokens, as CoNaLa scores generated code (code_bleu)")
    _add_decode_options(p)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP (JSON API, metrics, a web page to try it)",
                       description="Serve a model folder with FastAPI on uvicorn: POST /v1/translate, GET /health, "
                       "GET /metrics (Prometheus), the page at / and the API docs at /docs. Concurrent requests "
                       "are decoded together (dynamic batching). Settings default to the model's serve section.")
    p.add_argument("--model", required=True, help="model folder (fixed for the life of the server)")
    p.add_argument("--api-key", help="require this key in the X-API-Key header (default: $TRANSDUCE_API_KEY)")
    p.add_argument("--no-api-key", action="store_true",
                   help="allow binding beyond this machine without an API key")
    _add_options(p, "serve", ServeConfig)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="weights for decoding")


def _add_quantize(sub) -> None:
    p = sub.add_parser("quantize", help="int8 copy of a model for fast CPU inference",
                       description="Write an int8 copy of a model folder (linear and recurrent weights as int8 with "
                       "a float scale per output row; activations quantized at run time). It loads and decodes "
                       "like any model folder (translate, evaluate, serve, the API), on the CPU.")
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--out", required=True, help="new model folder")
    p.add_argument("--keep-float", action="append", default=[], metavar="WEIGHT",
                   help="a weight to keep in float32, e.g. output.weight (repeatable)")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a Transformer to another inference engine (CTranslate2)",
                       description="Convert a Transformer model folder for CTranslate2 (needs the ctranslate2 "
                       "package: pip install 'transduce[export]'); the folder also holds our tokenizers and "
                       "vocabularies so that outputs can be detokenized the same way.")
    p.add_argument("--model", required=True, help="model folder (a Transformer)")
    p.add_argument("--to", required=True, choices=["ctranslate2"], help="target engine")
    p.add_argument("--out", required=True, help="new folder")
    p.add_argument("--quantization", help="CTranslate2 weight type: int8, int8_float32, int16, float16, bfloat16 ...")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def _add_average(sub) -> None:
    p = sub.add_parser("average", help="average the weights of a run's last checkpoints into a new model",
                       description="Average the weights of the last K checkpoints of RUN_DIR (element-wise mean) "
                       "and write a model folder that translate, evaluate and the API load like any other.")
    p.add_argument("run_dir", help="a training output folder with checkpoints/")
    p.add_argument("--last", type=int, default=None, help="how many of the newest checkpoints (default: all kept)")
    p.add_argument("--steps", type=int, nargs="+", default=None,
                   help="the checkpoints of these updates instead (one step: that checkpoint as a model folder)")
    p.add_argument("--out", required=True, help="new model folder")


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="draw a run's learning curves to a PNG",
                       description="Draw train/dev loss, dev BLEU/chrF/ROUGE-L, learning rate and tokens/s "
                       "from RUN_DIR/log.jsonl.")
    p.add_argument("run_dir", help="a training output folder")
    p.add_argument("--out", help="PNG file (default: RUN_DIR/curves.png)")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="train a small model on the embedded data set, then decode and score it",
                       description="Train on the embedded CSL title data (Chinese abstracts -> titles, characters), "
                       "decode its test set, print examples and scores.")
    p.add_argument("--out", default="runs/demo", help="model folder (default: runs/demo)")
    p.add_argument("--steps", type=int, default=None, help="training updates (default: the demo's budget)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_quickstart(args) -> int:
    from transduce.quickstart import run_quickstart

    try:
        run_quickstart(args.pairs, args.out, dev=args.dev, test=args.test, tokenizer=args.tokenizer, arch=args.arch,
                       steps=args.steps, overrides=args.overrides, progress=not args.quiet, serve=not args.no_serve,
                       port=args.port, say=lambda m: print(m, file=sys.stderr, flush=True))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return 0


def cmd_train(args) -> int:
    from transduce.training.trainer import Trainer

    config = _train_config(args)
    trainer = Trainer(config, args.out, device=args.device, log=lambda m: print(m, file=sys.stderr),
                      fresh=args.fresh)
    if trainer.step >= config.train.steps:
        trainer.log(f"{args.out}: already trained for {trainer.step} updates (train.steps={config.train.steps}); "
                    "raise --steps to go on, or --fresh to start over")
        return 0
    trainer.fit()
    say = trainer.log  # silent in all but the first process of a data-parallel run
    if trainer.interrupted is not None:
        say(f"stopped at update {trainer.step}; the same command resumes from {args.out}")
        return 128 + trainer.interrupted
    say(f"model saved in {args.out}")
    return 0


def _train_config(args) -> Config:
    """The config file, or the run's own config.json when resuming with no config and no --train,
    or the defaults; then the command-line values and --set overrides."""
    saved = Path(args.out, CONFIG_FILE)
    if args.config:
        config = Config.load(args.config)
    elif args.train is None and not args.fresh and saved.is_file():
        config = Config.load(saved)
    else:
        config = Config()
    flags = {"data.train": args.train, "data.train_target": args.train_target, "data.dev": args.dev,
             "data.dev_target": args.dev_target, "train.steps": args.steps, "train.save_every": args.save_every,
             "train.progress": False if args.quiet else None}
    return config.override(_given(flags)).override(list(args.overrides))


def cmd_translate(args) -> int:
    from transduce.inference import load

    if args.attention and not args.json:
        raise ConfigError("--attention needs --json")
    translator = load(args.model, device=args.device, precision=args.precision)
    lines = list(read_lines(args.input) if args.input else read_lines(stream=sys.stdin.buffer))
    rows = translator.translate_nbest(lines, nbest=args.nbest, attention=args.attention,
                                      **_decode_overrides(args))
    sink = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for line, row in zip(lines, rows):
            if args.json:
                sink.write(json.dumps(_json_record(line, row, args.attention), ensure_ascii=False) + "\n")
            elif args.nbest == 1:
                sink.write((row[0].text if row else "") + "\n")
            else:
                sink.write("\t".join(f"{t.text}\t{t.score:.4f}" for t in row) + "\n")
    finally:
        if args.output:
            sink.close()
    return 0


def _json_record(source: str, row: list, attention: bool) -> dict:
    """{"source", "outputs": [{"text", "score", "tokens"(, "source_tokens", "attention")}, ...]}"""
    outputs = []
    for t in row:
        output = {"text": t.text, "score": t.score, "tokens": t.tokens}
        if attention:
            output.update(source_tokens=t.source_tokens, attention=t.attention)
        outputs.append(output)
    return {"source": source, "outputs": outputs}


def cmd_evaluate(args) -> int:
    from transduce.evaluation.report import evaluate
    from transduce.inference import load

    translator = load(args.model, device=args.device, precision=args.precision)
    pairs = read_pairs(args.data, target_path=args.data_target, fmt=translator.config.data.format,
                       source_field=translator.config.data.source_field,
                       target_field=translator.config.data.target_field)
    report, hypotheses = evaluate(translator, pairs, code=args.code_bleu, **_decode_overrides(args))
    if args.hypotheses:
        Path(args.hypotheses).write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


def cmd_serve(args) -> int:
    import ipaddress
    import os

    import uvicorn

    from transduce.inference import Translator
    from transduce.serving.app import create_app

    model = Path(args.model)
    saved = Config.load(model / CONFIG_FILE) if (model / CONFIG_FILE).is_file() else Config()
    settings = saved.override(_section_overrides(args, "serve", ServeConfig)).serve
    api_key = args.api_key or os.environ.get("TRANSDUCE_API_KEY") or None
    try:
        loopback = settings.host == "localhost" or ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and api_key is None and not args.no_api_key:
        raise ConfigError(f"--host {settings.host} serves the model beyond this machine: set an API key "
                          "(--api-key or TRANSDUCE_API_KEY), or pass --no-api-key to serve it openly")
    if not (model / CONFIG_FILE).is_file():
        raise ConfigError(f"{model}: not a model folder (no {CONFIG_FILE})")
    app = create_app(model, settings, api_key=api_key,
                     load=lambda: Translator.from_dir(model, args.device, args.precision))
    print(f"serving {model} at http://{settings.host}:{settings.port}/ (API docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


def cmd_quantize(args) -> int:
    from transduce.export.quantize import QuantizeError, quantize_model_dir

    try:
        info = quantize_model_dir(args.model, args.out, keep_float=args.keep_float)
    except QuantizeError as exc:
        raise ConfigError(str(exc)) from None
    print(f"int8 model in {args.out}: {info['quantized_tensors']} weight matrices int8, {info['float_tensors']} "
          f"kept float; {info['float_bytes'] / 2**20:.1f} MiB -> {info['int8_bytes'] / 2**20:.1f} MiB", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from transduce.export.ctranslate2 import ExportError, export_ctranslate2

    try:
        out = export_ctranslate2(args.model, args.out, args.quantization, force=args.force)
    except ExportError as exc:
        raise ConfigError(str(exc)) from None
    print(f"CTranslate2 model in {out}", file=sys.stderr)
    return 0


def cmd_average(args) -> int:
    from transduce.training.averaging import average_run

    out, used = average_run(args.run_dir, args.out, last=args.last, steps=args.steps)
    print(f"averaged {len(used)} checkpoints ({', '.join(p.name for p in used)}) into {out}", file=sys.stderr)
    return 0


def cmd_plot(args) -> int:
    from transduce.training.curves import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0


def cmd_demo(args) -> int:
    from transduce.demo import run_demo

    run_demo(args.out, steps=args.steps, progress=not args.quiet)
    return 0


COMMANDS = {"quickstart": cmd_quickstart, "train": cmd_train, "translate": cmd_translate, "evaluate": cmd_evaluate,
            "serve": cmd_serve, "quantize": cmd_quantize, "export": cmd_export, "average": cmd_average,
            "plot": cmd_plot, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transduce.inference import ModelLoadError
    from transduce.training.checkpoint import CheckpointError

    try:
        return COMMANDS[args.command](args)
    except (*USER_ERRORS, ModelLoadError, CheckpointError) as exc:
        print(f"transduce: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("transduce: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
