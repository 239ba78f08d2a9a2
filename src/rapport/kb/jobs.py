"""Background work on articles: their sentence embeddings, computed outside any lock."""

from sqlalchemy import update

from rapport.jobs.registry import JobContext, job
from rapport.kb import render, search
from rapport.kb.models import Article


@job("kb.embed")
def embed_article(ctx: JobContext, *, article_id: str) -> None:
    """Embed the article as it is now; a no-op without the ``ai`` extra.

    Loading the model and encoding take seconds on a busy CPU: that happens between two
    short transactions, never inside one, so SQLite's single writer is not held up.
    """
    if not search.semantic_available():
        return
    with ctx.database.session(write=False) as db:
        article = db.get(Article, article_id)
        if article is None:
            return
        text = f"{article.title}\n{render.plain_text(article.body_html)}"
        seen_at = article.updated_at
    vectors = search.embed([text[:4000]])
    if vectors is None:
        return
    with ctx.database.session() as db:
        # Only if nobody changed the article meanwhile: their own job embeds the new text.
        db.execute(
            update(Article)
            .where(Article.id == article_id, Article.updated_at == seen_at)
            .values(embedding=vectors[0], embedding_model=search.MODEL_NAME)
            .execution_options(synchronize_session=False)
        )
