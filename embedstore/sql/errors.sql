-- Images that could not be read or encoded, newest first.
SELECT version, image_id, path, stage, reason, time
FROM errors
ORDER BY time DESC, image_id;
