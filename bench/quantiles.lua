-- wrk prints only a few percentiles; bench/load.py merges several short runs into one
-- distribution, so each run also prints its latency quantiles (microseconds): every 0.5%
-- up to 95%, then every 0.1% up to 99.9%.
done = function(summary, latency, requests)
  for i = 1, 190 do
    io.write(string.format("quantile %.1f %d\n", i / 2, latency:percentile(i / 2)))
  end
  for i = 951, 999 do
    io.write(string.format("quantile %.1f %d\n", i / 10, latency:percentile(i / 10)))
  end
end
