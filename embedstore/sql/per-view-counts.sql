-- Images per view, projection and split.
SELECT coalesce(view, '(unknown)') AS view, coalesce(projection, '') AS projection,
       coalesce(split, '') AS split, count(*) AS images
FROM images
GROUP BY ALL
ORDER BY view, projection, split;
