"""flowplatform: a multi-tenant flow platform with human-in-the-loop corrections."""
