SELECT name, config
FROM trunks
ORDER BY name
