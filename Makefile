# Conveniences over scripts/dev.sh, which works without make on a fresh machine.
.PHONY: run test swarm-test venv lint format engines images clean

run:
	bash scripts/dev.sh run

test:
	bash scripts/dev.sh test

# pman deployed as a Swarm stack from docker-compose.yml, tested over HTTP
swarm-test:
	bash test_swarm.sh

venv:
	bash scripts/dev.sh venv

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: venv
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

engines:
	bash scripts/engines-up.sh

images:
	bash scripts/build-test-images.sh

clean:
	rm -rf .venv storebase pman-data .pytest_cache .ruff_cache *.egg-info
