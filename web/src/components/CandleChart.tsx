// One-minute candles with TradingView's lightweight-charts (canvas, Apache-2.0): the API's candles,
// then each live trade extends the current minute or opens the next. Prices become numbers only
// here, for drawing; the text around the chart shows the exact strings.

import { useEffect, useRef } from 'react';
import {
  CandlestickSeries,
  ColorType,
  LineStyle,
  createChart,
  type CandlestickData,
  type IChartApi,
  type IPriceLine,
  type ISeriesApi,
  type UTCTimestamp,
} from 'lightweight-charts';
import { groupDecimal } from '../lib/decimal';
import type { Candle, LivePrice } from '../types';

export interface PriceLine {
  price: string;
  title: string;
}

interface Props {
  candles: Candle[];
  live: LivePrice | undefined;
  lines: PriceLine[];
  timeZone: string;
  locale: 'ko' | 'en';
  label: string;
}

/** Fraction digits the market's prices use (0 for KRW prices above 1000). */
function precisionOf(values: string[]): number {
  let precision = 0;
  for (const value of values) {
    const fraction = value.split('.')[1];
    if (fraction) precision = Math.max(precision, fraction.length);
  }
  return Math.min(precision, 8);
}

function minuteOf(iso: string): UTCTimestamp {
  return (Math.floor(new Date(iso).getTime() / 60_000) * 60) as UTCTimestamp;
}

export function CandleChart({ candles, live, lines, timeZone, locale, label }: Props) {
  const container = useRef<HTMLDivElement>(null);
  const chart = useRef<IChartApi | null>(null);
  const series = useRef<ISeriesApi<'Candlestick'> | null>(null);
  const last = useRef<CandlestickData<UTCTimestamp> | null>(null);
  const priceLines = useRef<IPriceLine[]>([]);
  // Korean convention (Upbit): rises red, falls blue. Elsewhere: green and red.
  const rise = locale === 'ko' ? '#e5484d' : '#16a34a';
  const fall = locale === 'ko' ? '#2563eb' : '#e5484d';

  useEffect(() => {
    if (!container.current) return;
    const hourMinute = new Intl.DateTimeFormat(locale === 'ko' ? 'ko-KR' : 'en-GB', {
      timeZone,
      hour: '2-digit',
      minute: '2-digit',
      hour12: false,
    });
    const full = new Intl.DateTimeFormat(locale === 'ko' ? 'ko-KR' : 'en-GB', {
      timeZone,
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      hour12: false,
    });
    const created = createChart(container.current, {
      autoSize: true,
      layout: {
        background: { type: ColorType.Solid, color: 'transparent' },
        textColor: '#64748b',
        fontFamily: 'inherit',
        attributionLogo: true,
      },
      grid: { vertLines: { color: 'rgba(148,163,184,0.15)' }, horzLines: { color: 'rgba(148,163,184,0.15)' } },
      rightPriceScale: { borderVisible: false },
      timeScale: { borderVisible: false, timeVisible: true, secondsVisible: false,
        tickMarkFormatter: (time: number) => hourMinute.format(new Date(time * 1000)) },
      localization: { timeFormatter: (time: number) => full.format(new Date(time * 1000)) },
      crosshair: { mode: 0 },
    });
    chart.current = created;
    series.current = created.addSeries(CandlestickSeries, {
      upColor: rise,
      downColor: fall,
      wickUpColor: rise,
      wickDownColor: fall,
      borderVisible: false,
    });
    return () => {
      created.remove();
      chart.current = null;
      series.current = null;
      last.current = null;
      priceLines.current = [];
    };
  }, [timeZone, locale, rise, fall]);

  // History.
  useEffect(() => {
    const target = series.current;
    if (!target) return;
    const precision = precisionOf(candles.flatMap((candle) => [candle.high, candle.low]));
    target.applyOptions({
      priceFormat: {
        type: 'custom',
        minMove: 1 / 10 ** precision,
        formatter: (price: number) => groupDecimal(price.toFixed(precision)),
      },
    });
    const data = candles.map((candle) => ({
      time: minuteOf(candle.minute),
      open: Number(candle.open),
      high: Number(candle.high),
      low: Number(candle.low),
      close: Number(candle.close),
    }));
    target.setData(data);
    last.current = data[data.length - 1] ?? null;
    chart.current?.timeScale().scrollToRealTime();
  }, [candles, timeZone, locale]);

  // Live trades.
  useEffect(() => {
    const target = series.current;
    if (!target || !live) return;
    const time = minuteOf(live.traded_at);
    const price = Number(live.price);
    const current = last.current;
    if (current && time < current.time) return;
    const bar =
      current && current.time === time
        ? { ...current, high: Math.max(current.high, price), low: Math.min(current.low, price), close: price }
        : { time, open: current?.close ?? price, high: price, low: price, close: price };
    target.update(bar);
    last.current = bar;
  }, [live]);

  // The user's targets on this market.
  useEffect(() => {
    const target = series.current;
    if (!target) return;
    for (const line of priceLines.current) target.removePriceLine(line);
    priceLines.current = lines.map((line) =>
      target.createPriceLine({
        price: Number(line.price),
        color: '#f59e0b',
        lineWidth: 1,
        lineStyle: LineStyle.Dashed,
        axisLabelVisible: true,
        title: line.title,
      }),
    );
  }, [lines, timeZone, locale]);

  return <div className="chart" ref={container} role="img" aria-label={label} />;
}
