// Time-series charts with the vendored uPlot (MIT, vendor/uplot/), loaded on
// first use so that the tree views do not pay for it.

import { fmtNumber, el } from './util.js';

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];
let loading = null;

function loadUPlot() {
  if (!loading) {
    const css = new Promise((resolve) => {
      const link = el('link', { rel: 'stylesheet', href: 'vendor/uplot/uPlot.min.css' });
      link.addEventListener('load', resolve);
      link.addEventListener('error', resolve);
      document.head.append(link);
    });
    loading = Promise.all([import('../vendor/uplot/uPlot.esm.js'), css]).then(([m]) => m.default);
  }
  return loading;
}

/**
 * Draws series over time into `box`: xs are Unix seconds, each series
 * {label, values} aligned with xs (null where a series has no point).
 * Returns {destroy()}. The legend shows the latest values until the cursor
 * points at another time.
 */
export async function timeChart(box, { xs, series, height = 240 }) {
  const UPlot = await loadUPlot();
  const width = Math.max(320, box.clientWidth || 640);
  const last = xs.length - 1;
  const opts = {
    width,
    height,
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true } },
    axes: [{}, { size: 60, values: (u, ticks) => ticks.map(fmtNumber) }],
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        stroke: COLORS[i % COLORS.length],
        width: 1.5,
        spanGaps: true,
        points: { show: true, size: 6 },
        value: (u, v) => (v == null ? '–' : fmtNumber(v)),
      })),
    ],
    hooks: {
      // With no cursor over the plot, keep the last point's values in the legend.
      setLegend: [(u) => {
        if (u.legend.idx == null && last >= 0) u.setLegend({ idx: last }, false);
      }],
    },
  };
  const u = new UPlot(opts, [xs, ...series.map((s) => s.values)], box);
  if (last >= 0) u.setLegend({ idx: last }, false);
  const ro = new ResizeObserver(() => {
    const w = Math.max(320, box.clientWidth);
    if (Math.abs(w - u.width) > 4) u.setSize({ width: w, height });
  });
  ro.observe(box);
  return {
    destroy() {
      ro.disconnect();
      u.destroy();
    },
    uplot: u,
  };
}
