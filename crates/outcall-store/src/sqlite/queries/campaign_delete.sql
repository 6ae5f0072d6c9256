DELETE FROM campaigns WHERE id = ?1
