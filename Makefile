.PHONY: check fast install
install:
	python -m pip install torch==2.13.0 -e ".[dev]"
check:
	bash scripts/check
fast:
	bash scripts/check -m "not slow"
