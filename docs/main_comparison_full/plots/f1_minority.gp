set terminal pngcairo size 900,560 noenhanced font "sans,11"
set output 'sweeps/main_comparison_full/plots/f1_minority.png'
set title 'f1_minority against method (mean ± std over seeds)' noenhanced
set xlabel 'method' noenhanced
set ylabel 'f1_minority' noenhanced
set grid
set key outside right top noenhanced
set offsets graph 0.04, graph 0.04, graph 0.08, graph 0.08
set xtics rotate by -30
plot 'sweeps/main_comparison_full/plots/f1_minority.dat' index 0 using 1:2:3:xtic(4) with yerrorlines lw 2 pt 7 ps 1.2 title 'f1_minority'
