"""Writes ``corpus.txt``: the example sentences of WordNet 3.0's glosses, the text the
example calibrates and distils on (``calibration.py``).

    apt-get install wordnet-base                  # Debian's copy of WordNet 3.0
    python examples/minilm/make_corpus.py          # rewrites examples/minilm/corpus.txt

A gloss's examples are its double-quoted parts ("he ate a piece of bread"): everyday
English of the kind the evaluated sentences are.  Kept: 5 to 30 words, first letter made
upper case, a full stop added where none ends it; duplicates and any sentence that is
also an evaluated or hand-written calibration sentence (case ignored) dropped; then a fixed
shuffle, so the file's first N lines are a random sample of N, and the first ``COUNT``
kept.  WordNet's licence asks that its notice travel with every copy: it heads the file.
"""
from __future__ import annotations

import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))    # examples/

from minilm.calibration import CALIBRATION  # noqa: E402
from minilm.sentences import SENTENCES  # noqa: E402

WORDNET = Path("/usr/share/wordnet")
OUT = Path(__file__).resolve().parent / "corpus.txt"
COUNT = 8192
SEED = 0
NOTICE = """\
# Example sentences from the glosses of WordNet 3.0 (examples/minilm/make_corpus.py).
# WordNet 3.0 Copyright 2006 by Princeton University.  All rights reserved.
# Permission to use, copy, modify and distribute this software and database and its
# documentation for any purpose and without fee or royalty is hereby granted, provided
# that you agree to comply with the following copyright notice and statements, including
# the disclaimer, and that the same appear on ALL copies of the software, database and
# documentation, including modifications that you make for internal use or for
# distribution.
# THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES NO
# REPRESENTATIONS OR WARRANTIES, EXPRESS OR IMPLIED.  BY WAY OF EXAMPLE, BUT NOT
# LIMITATION, PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES OF MERCHANT-
# ABILITY OR FITNESS FOR ANY PARTICULAR PURPOSE OR THAT THE USE OF THE LICENSED
# SOFTWARE, DATABASE OR DOCUMENTATION WILL NOT INFRINGE ANY THIRD PARTY PATENTS,
# COPYRIGHTS, TRADEMARKS OR OTHER RIGHTS.
# The name of Princeton University or Princeton may not be used in advertising or
# publicity pertaining to distribution of the software and/or database.  Title to
# copyright in this software, database and any associated documentation shall at all
# times remain with Princeton University and LICENSEE agrees to preserve same.
"""


def examples(folder: Path = WORDNET) -> list[str]:
    """Every gloss example of WordNet's data files that passes the filters above, in file
    order, without duplicates."""
    seen, out = {s.lower() for s in SENTENCES + CALIBRATION}, []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (folder / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith(" ") or " | " not in line:       # the licence header
                continue
            for text in re.findall(r'"([^"]+)"', line.split(" | ", 1)[1]):
                text = " ".join(text.split())
                if not 5 <= len(text.split()) <= 30:
                    continue
                text = text[0].upper() + text[1:] + ("" if text[-1] in ".?!" else ".")
                if text.lower() not in seen:
                    seen.add(text.lower())
                    out.append(text)
    return out


def main() -> int:
    if not (WORDNET / "data.noun").exists():
        sys.exit(f"no WordNet at {WORDNET}: apt-get install wordnet-base")
    sentences = examples()
    random.Random(SEED).shuffle(sentences)
    OUT.write_text(NOTICE + "\n".join(sentences[:COUNT]) + "\n", encoding="utf-8")
    print(f"{OUT}: {min(COUNT, len(sentences))} of {len(sentences)} sentences")
    return 0


if __name__ == "__main__":
    sys.exit(main())
