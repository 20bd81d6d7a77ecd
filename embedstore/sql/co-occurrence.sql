-- Pairs of findings positive on the same image, most frequent first.
SELECT a.finding AS finding_a, b.finding AS finding_b, count(*) AS images
FROM labels a JOIN labels b ON a.id = b.id AND a.finding < b.finding
WHERE a.value = 1 AND b.value = 1
GROUP BY a.finding, b.finding
ORDER BY images DESC, finding_a, finding_b;
