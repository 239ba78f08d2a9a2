"""The knowledge base: articles in collections, per locale, and the public help center."""
