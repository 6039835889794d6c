#!/bin/sh
# Installs the optimizer.
set -eu
curl -fsSL https://get.image-tools.example/install.sh | sh
echo "optimizer installed"
