"""all-MiniLM-L6-v2 with its linear layers pruned and run through spc (issue 15).

    python examples/minilm/run.py --device cpu|cuda [--quick] [--threads N] [--out DIR]
                                  [--model-dir DIR] [--pack DIR]

Modules: ``wordpiece`` (tokenizer), ``weights`` (model files: find, read, write,
pack), ``bert`` (the forward), ``sparsify`` (pruning and the spc / torch.sparse /
masked-dense linears), ``sentences`` (the fixed sentence set), ``bench`` (the
table), ``run`` (the command line).
"""
