set terminal pngcairo size 900,560 noenhanced font "sans,11"
set output 'sweeps/main_comparison_full/plots/macro_f1.png'
set title 'macro_f1 against method (mean ± std over seeds)' noenhanced
set xlabel 'method' noenhanced
set ylabel 'macro_f1' noenhanced
set grid
set key outside right top noenhanced
set offsets graph 0.04, graph 0.04, graph 0.08, graph 0.08
set xtics rotate by -30
plot 'sweeps/main_comparison_full/plots/macro_f1.dat' index 0 using 1:2:3:xtic(4) with yerrorlines lw 2 pt 7 ps 1.2 title 'macro_f1'
