//! Hardware catalog, model zoo, Hugging Face import, analytic compute model.
