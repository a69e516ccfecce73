#!/usr/bin/env bash
# Plots a learning-curve CSV written by `icae train pretrain --curve-csv` (step, ae_loss,
# bleu4_<L>, bleu4_<4L>, ppl_full, ppl_slots, ppl_none) as a PNG with Debian's gnuplot.
# Usage: scripts/plot-curve.sh CURVE.csv OUT.png
set -euo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 CURVE.csv OUT.png" >&2; exit 2; }
gnuplot <<GP
set datafile separator ","
set terminal pngcairo noenhanced size 1100,420 font ",10"
set output "$2"
set key autotitle columnhead
set multiplot layout 1,3
set xlabel "step"
set title "held-out autoencoding loss (nats/token)"
plot "$1" using 1:2 with linespoints title "AE loss, 128 tokens"
set title "held-out BLEU-4 of greedy reconstructions"
set yrange [0:1]
plot "$1" using 1:3 with linespoints title columnhead, \
     "$1" using 1:4 with linespoints title columnhead
set title "perplexity of the next 64 tokens after 128"
set autoscale y
plot "$1" using 1:5 with linespoints title "full context", \
     "$1" using 1:6 with linespoints title "slots", \
     "$1" using 1:7 with linespoints title "no context"
unset multiplot
GP
