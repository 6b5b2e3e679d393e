"""Special token ids and file names shared by every module (the bottom of the import graph)."""

PAD, UNK, BOS, EOS = 0, 1, 2, 3
PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN)
TOKENIZER_KINDS = ("char", "word", "code", "spm")  # data.tokenizer
KERNEL_MODES = ("auto", "onednn", "mkl", "torch")  # train.kernels

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SRC_VOCAB_FILE = "src_vocab.json"
TGT_VOCAB_FILE = "tgt_vocab.json"
SRC_TOKENIZER_PREFIX = "src_tokenizer"
TGT_TOKENIZER_PREFIX = "tgt_tokenizer"
OPTIMIZER_FILE = "optimizer.safetensors"
TRAINER_STATE_FILE = "trainer_state.json"
LOG_FILE = "log.jsonl"
